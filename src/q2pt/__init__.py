"""q2pt: query-to-product-type prediction across the locales of a global shop."""

__version__ = "0.2.0.dev0"  # 0.1.0 was the first version; what changed since is in the README
