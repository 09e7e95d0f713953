"""q2pt: query-to-product-type prediction across the locales of a global shop."""

__version__ = "0.1.0"
