"""Argument types the subcommands share: a bad value is argparse's usage error naming the
option, not a traceback or a run that refuses every row."""

from __future__ import annotations

import argparse


def _whole_number(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1 (``--max-query-chars``)."""
    return _whole_number(text, 1)


def label_separator(text: str) -> str:
    """A separator of the levels of product type paths (``--label-separator``): not empty, as
    ``data.label_separator``."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty (the levels of a path would not split)")
    return text


def non_negative_int(text: str) -> int:
    """An integer of at least 0 (``--max-problems``, where 0 means all)."""
    return _whole_number(text, 0)
