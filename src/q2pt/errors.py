"""q2pt's own exceptions. The CLI and HTTP layers turn these into clean messages
and exit/status codes in one place (``q2pt.cli.main`` and ``q2pt.serving.app``)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Problem:
    """One problem found in user data: where it is and what is wrong."""

    file: str
    row: int | None  # 1-based data row (header excluded); None for file-level problems
    field: str | None
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{self.severity}: {where}: {self.message}"


class Q2PTError(Exception):
    """Base class: every error a user can cause. Never shown as a traceback."""

    exit_code = 1
    http_status = 400


class DataError(Q2PTError):
    """User data is unreadable or invalid. Carries every problem found."""

    exit_code = 2
    http_status = 422

    def __init__(self, message: str, problems: Sequence[Problem] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)

    def __str__(self) -> str:  # message + up to 50 problems
        lines = [super().__str__()]
        for p in self.problems[:50]:
            lines.append(f"  {p}")
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more problems")
        return "\n".join(lines)


class ConfigError(Q2PTError):
    """A bad configuration value or unknown key."""

    exit_code = 2


class ModelLoadError(Q2PTError):
    """A model folder that cannot be loaded (missing, corrupt, newer format...)."""

    exit_code = 3
    http_status = 500


class UnknownLocaleError(Q2PTError):
    """A locale the model cannot serve (non-unified model, no fallback given)."""

    exit_code = 2
    http_status = 422


def check_seed(seed: object, name: str = "seed") -> int:
    """A random seed given by a user: a whole number, 0 or more (numpy's seeds); ConfigError
    naming ``name`` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"{name} must be a whole number, 0 or more, got {seed!r}")
    return int(seed)


class DependencyError(Q2PTError):
    """An optional dependency (extra) is missing."""

    exit_code = 4
    http_status = 500


def require(module: str, extra: str):
    """Import an optional dependency lazily, or raise a DependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError(
            f"'{module}' is needed for this and is not installed: pip install 'q2pt[{extra}]'"
        ) from exc
