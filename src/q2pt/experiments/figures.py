"""The report's figures (matplotlib, Agg backend: no display needed), drawn from
``results.json`` only. Every function writes one PNG and returns its path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from q2pt.errors import require

__all__ = [
    "plot_pr_curves",
    "plot_locale_pr_curves",
    "plot_rap_by_locale",
    "plot_gains",
    "plot_infra",
    "plot_lines",
    "plot_bars",
]

DPI = 110


def _plt() -> Any:
    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return path


def _style(i: int) -> dict[str, Any]:
    dashes = ["-", "--", "-.", ":"]
    return {"linestyle": dashes[(i // 10) % len(dashes)], "color": f"C{i % 10}"}


def plot_pr_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path, *, precision: float = 0.8,
                   title: str = "Precision-recall over all (query, product type) pairs") -> Path:
    """One PR curve per model (``{label: {"recall": [...], "precision": [...]}}``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (label, c) in enumerate(curves.items()):
        if c.get("recall"):
            ax.plot(c["recall"], c["precision"], label=label, linewidth=1.6, **_style(i))
    ax.axhline(precision, color="grey", linewidth=0.8, linestyle=":")
    ax.text(0.01, precision + 0.01, f"precision {precision:g}", color="grey", fontsize=8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_locale_pr_curves(per_locale: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                          locales: Sequence[str], path: Path, *, precision: float = 0.8,
                          small: Sequence[str] = ()) -> Path:
    """A grid of PR curves, one panel per locale (``per_locale[label][locale] = curve``)."""
    plt = _plt()
    n = max(1, len(locales))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False, sharex=True, sharey=True)
    for k, loc in enumerate(locales):
        ax = axes[k // cols][k % cols]
        for i, (label, by_loc) in enumerate(per_locale.items()):
            c = by_loc.get(loc) or {}
            if c.get("recall"):
                ax.plot(c["recall"], c["precision"], label=label, linewidth=1.1, **_style(i))
        ax.axhline(precision, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(loc + (" (small)" if loc in small else ""), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for k in range(len(locales), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.02 * math.ceil(len(labels) / 4)))
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_rap_by_locale(values: Mapping[str, Mapping[str, tuple[float | None, Sequence[float | None] | None]]],
                       locales: Sequence[str], path: Path, *, precision: float = 0.8,
                       small: Sequence[str] = (), title: str | None = None,
                       ylabel: str | None = None) -> Path:
    """Grouped bars: R@P per locale (and global) per model, with 95% CI error bars, in rows
    of at most 7 locales. ``values[label][locale] = (r_at_p, [lo, hi])``."""
    plt = _plt()
    import numpy as np

    labels = list(values)
    n = max(1, len(labels))
    per_row = 7
    chunks = [list(locales[i : i + per_row]) for i in range(0, len(locales), per_row)] or [[]]
    fig, axes = plt.subplots(len(chunks), 1, figsize=(12, 2.9 * len(chunks) + 0.6), squeeze=False)
    width = 0.8 / n
    for row, chunk in enumerate(chunks):
        ax = axes[row][0]
        x = np.arange(len(chunk))
        for i, label in enumerate(labels):
            ys, lo, hi = [], [], []
            for loc in chunk:
                v, ci = values[label].get(loc, (None, None))
                ys.append(float("nan") if v is None else v)
                down, up = _error_bar(v, ci)
                lo.append(down)
                hi.append(up)
            ax.bar(x + (i - (n - 1) / 2) * width, ys, width, label=label if row == 0 else None,
                   color=f"C{i % 10}", yerr=[lo, hi], error_kw={"elinewidth": 0.6, "capsize": 1.2})
        ax.set_xticks(x)
        ax.set_xticklabels([loc + ("*" if loc in small else "") for loc in chunk], fontsize=9)
        ax.set_xlim(-0.5, per_row - 0.5)
        ax.set_ylim(0, 1)
        ax.set_ylabel(ylabel or f"R@P{precision * 100:g}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_title(title or f"R@P{precision * 100:g} per locale with 95% bootstrap CIs (* small store)",
                         fontsize=10)
    fig.legend(loc="lower center", ncol=min(4, n), fontsize=8, bbox_to_anchor=(0.5, -0.01 - 0.025 * math.ceil(n / 4)))
    fig.tight_layout()
    return _save(fig, path)


def plot_gains(gains: Mapping[str, Sequence[float | None]], locales: Sequence[str], path: Path, *,
               small: Sequence[str] = (), base: str = "non-unified") -> Path:
    """Bars of each unified variant's R@P gain over ``base`` per locale (ordered as given)."""
    plt = _plt()
    import numpy as np

    labels = list(gains)
    n = max(1, len(labels))
    x = np.arange(len(locales))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(locales) + 2), 3.8))
    for i, label in enumerate(labels):
        ys = [float("nan") if g is None else 100 * g for g in gains[label]]
        ax.bar(x + (i - (n - 1) / 2) * width, ys, width, label=label, color=f"C{i + 1}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([loc + ("*" if loc in small else "") for loc in locales], rotation=45, fontsize=8)
    ax.set_ylabel(f"gain over {base} (points)")
    ax.set_title(f"Gain in R@P over {base}, locales by training size (largest first; * small store)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_infra(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Four bar panels: training time, peak memory increase, size on disk, models to deploy."""
    plt = _plt()
    panels = [
        ("train_seconds", "training time (s)", 1.0),
        ("train_peak_rss_increase_mb", "peak memory increase (MiB)", 1.0),
        ("model_bytes", "size on disk (MiB)", 1 / 2**20),
        ("networks", "models / networks", 1.0),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    names = [r["label"] for r in rows]
    for ax, (key, title, scale) in zip(axes, panels):
        vals = [float("nan") if r.get(key) is None else float(r[key]) * scale for r in rows]
        ax.barh(range(len(rows)), vals, color=[f"C{i % 10}" for i in range(len(rows))])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names if ax is axes[0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_lines(series: Mapping[str, Sequence[tuple[float, float | None, Sequence[float | None] | None]]],
               path: Path, *, xlabel: str, ylabel: str, title: str, logx: bool = False) -> Path:
    """Lines with 95% CI bands: ``series[label] = [(x, y, [lo, hi]), ...]``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda p: p[0])
        xs = [p[0] for p in pts]
        ys = [float("nan") if p[1] is None else p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=label, color=f"C{i % 10}")
        lo = [p[2][0] if p[2] and p[2][0] is not None else float("nan") for p in pts]
        hi = [p[2][1] if p[2] and p[2][1] is not None else float("nan") for p in pts]
        ax.fill_between(xs, lo, hi, color=f"C{i % 10}", alpha=0.15, linewidth=0)
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks([p[0] for p in next(iter(series.values()), [])])
        ax.get_xaxis().set_major_formatter(_plt().FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bars(values: Sequence[tuple[str, float | None, Sequence[float | None] | None]], path: Path, *,
              ylabel: str, title: str, ylim: tuple[float, float] | None = (0, 1)) -> Path:
    """One bar per entry with an optional 95% CI: ``[(label, y, [lo, hi]), ...]``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(values) + 2), 3.8))
    ys, lo, hi = [], [], []
    for _, y, ci in values:
        ys.append(float("nan") if y is None else y)
        down, up = _error_bar(y, ci)
        lo.append(down)
        hi.append(up)
    ax.bar(range(len(values)), ys, color=[f"C{i % 10}" for i in range(len(values))], yerr=[lo, hi],
           error_kw={"elinewidth": 0.8, "capsize": 3})
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels([v[0] for v in values], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _error_bar(value: float | None, ci: Any) -> tuple[float, float]:
    """The (below, above) lengths of a CI's error bar around ``value`` (0, 0 when unknown)."""
    if ci and ci[0] is not None and ci[1] is not None and value is not None:
        return max(0.0, value - ci[0]), max(0.0, ci[1] - value)
    return 0.0, 0.0
