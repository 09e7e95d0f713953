"""The experiment report: ``report.md``, a self-contained ``report.html`` (figures embedded as
``data:`` URIs, inline CSS, no external references) and the PNG figures, all rendered from
``results.json`` alone -- so a report can be re-rendered, and studies run one at a time
accumulate in one report.

The report is a list of blocks (headings, paragraphs, tables, figures, code) rendered twice,
to Markdown and to HTML, so that both say exactly the same thing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from q2pt.io import write_text

from . import figures as F
from .settings import CONFIGS_DIR, STUDIES

__all__ = [
    "Report",
    "render_report",
    "render_folds_report",
    "headline_rows",
    "headline_table",
    "global_rows",
    "folds_headline_table",
    "format_ci",
    "format_deployed",
    "deployed_note",
]

FIG_DIR = "figures"


# --------------------------------------------------------------------------- blocks


@dataclass
class Report:
    """Blocks of a report; ``to_markdown()`` and ``to_html()`` render them."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> None:
        self.blocks.append(("heading", (level, text, anchor or _slug(text))))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def banner(self, text: str) -> None:
        """A highlighted paragraph (a blockquote in Markdown)."""
        self.blocks.append(("banner", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> None:
        """``align``: one character per column, ``l`` or ``r`` (default: first l, rest r)."""
        align = align or ("l" + "r" * (len(header) - 1))
        self.blocks.append(("table", ([str(h) for h in header], [[_cell(c) for c in r] for r in rows], align)))

    def figure(self, path: Path, rel: str, caption: str) -> None:
        self.blocks.append(("figure", (Path(path), rel, caption)))

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (text, lang)))

    # ------------------------------------------------------------------ markdown
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text, _ = value
                out += ["#" * level + " " + text, ""]
            elif kind == "para":
                out += [value, ""]
            elif kind == "banner":
                out += [f"> {value}", ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                header, rows, align = value
                out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
                out.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
                out += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                _, rel, caption = value
                out += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
            elif kind == "code":
                text, lang = value
                out += [f"```{lang}", text, "```", ""]
        return "\n".join(out).rstrip() + "\n"

    # ------------------------------------------------------------------ html
    def to_html(self) -> str:
        toc = [(v[1], v[2]) for k, v in self.blocks if k == "heading" and v[0] == 2]
        body: list[str] = [f"<h1>{_inline(self.title)}</h1>"]
        if toc:
            body.append("<nav><b>Contents</b><ul>" + "".join(
                f'<li><a href="#{a}">{_inline(t)}</a></li>' for t, a in toc) + "</ul></nav>")
        for kind, value in self.blocks:
            if kind == "heading":
                level, text, anchor = value
                body.append(f'<h{level} id="{anchor}">{_inline(text)}</h{level}>')
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "banner":
                body.append(f'<p class="banner">{_inline(value)}</p>')
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                header, rows, align = value
                cls = ['class="l"' if a == "l" else 'class="r"' for a in align]
                head = "".join(f"<th {c}>{_inline(h)}</th>" for h, c in zip(header, cls))
                trs = "".join("<tr>" + "".join(f"<td {c}>{_inline(x)}</td>" for x, c in zip(r, cls)) + "</tr>"
                              for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "figure":
                path, _, caption = value
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(caption)}</figcaption></figure>")
            elif kind == "code":
                text, _ = value
                body.append(f"<pre><code>{html.escape(text)}</code></pre>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(_plain(self.title))}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n"
        )


_CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;"
    "margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.88em}"
    "th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f2f2f2}td.r,th.r{text-align:right}"
    "td.l,th.l{text-align:left}tbody tr:nth-child(even){background:#fafafa}"
    "code{background:#f4f4f4;padding:1px 3px;border-radius:3px;font-size:0.92em}"
    "pre{background:#f4f4f4;padding:0.7em;overflow-x:auto;font-size:0.85em}"
    "figure{margin:1em 0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
    "nav{background:#f8f8f8;border:1px solid #ddd;padding:0.5em 1em;font-size:0.9em}"
    ".banner{background:#fff3cd;border:1px solid #e0c060;padding:0.5em 1em}"
)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _plain(text).lower()).strip("-") or "section"


def _plain(text: str) -> str:
    return text.replace("**", "").replace("`", "")


def _inline(text: str) -> str:
    """Escape for HTML, then render `code` and **bold** (the only inline markup used here)."""
    parts = re.split(r"(`[^`]*`)", str(text))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            esc = html.escape(part)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc))
    return "".join(out)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# --------------------------------------------------------------------------- formatting


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{float(x):.{digits}f}"


def format_ci(value: Any, ci: Sequence[Any] | None, digits: int = 3) -> str:
    """``0.712 [0.690, 0.733]`` (or just the value, or ``-``)."""
    if value is None:
        return "-"
    if ci and ci[0] is not None and ci[1] is not None:
        return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return f"{value:.{digits}f}"


def format_deployed(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.612 [0.590, 0.634] (P=0.812)``: recall as deployed, its CI and the precision it
    reached on test (``-`` when the record has no as-deployed figures)."""
    if not entry or entry.get("recall") is None:
        return "-"
    prec = entry.get("precision")
    return (format_ci(entry["recall"], entry.get("recall_ci"), digits)
            + f" (P={'-' if prec is None else f'{prec:.{digits}f}'})")


def deployed_note(p: float, rap: str) -> str:
    """The sentence under a table with both global figures: which is which."""
    return (f"**Pooled** ({rap}): one threshold over the scores of every locale together, the best single "
            f"threshold on the test split itself; a model whose per-locale networks score on different scales "
            f"is penalised by it, and no model is served that way. **As deployed**: each locale's test scores "
            f"cut at that locale's threshold calibrated on the validation split to reach precision {p:g} (the "
            f"global validation threshold where a locale has too few validation positives or never reaches "
            f"it) -- the rule q2pt serves with; the q2pt variants use the thresholds stored in the model, the "
            f"baselines' are calibrated the same way on their validation scores. Its recall is over all test "
            f"(query, product type) pairs (types outside the label space count as missed); `P=` is the "
            f"precision actually reached on test, which may fall short of {p:g} since nothing was tuned on test.")


def _dep(ev: Mapping[str, Any] | None, loc: str | None = None) -> Mapping[str, Any] | None:
    """The as-deployed entry of an evaluation: global (``loc`` None) or a locale's."""
    d = (ev or {}).get("deployed")
    if not d:
        return None
    return d.get("global") if loc is None else (d.get("locales") or {}).get(loc)


def _gain(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):+.1f}"


def _mb(x: Any) -> str:
    return "-" if x is None else f"{float(x) / 2**20:,.1f}"


def _secs(x: Any) -> str:
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.1f} s" if x < 600 else f"{x / 60:.1f} min"


def _rap_name(results: Mapping[str, Any]) -> str:
    sec = (results.get("sections") or {}).get("main") or {}
    p = ((sec.get("settings") or {}).get("precision")) or 0.8
    return f"R@P{p * 100:g}"


# --------------------------------------------------------------------------- headline


def _main_records(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    sec = (results.get("sections") or {}).get("main")
    if not sec:
        return []
    runs = results.get("runs") or {}
    return [runs[k] for k in sec.get("runs", []) if k in runs]


def headline_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the headline table: each locale (by training size) and global,
    one column per model of the main comparison, ``R@P [95% CI]``."""
    recs = _main_records(results)
    sec = results["sections"]["main"]
    small = set(sec.get("small_stores") or [])
    sizes = sec.get("train_sizes") or {}
    header = ["locale", "train"] + [r["label"] for r in recs]
    rows = []
    for loc in [*sizes, "global"]:
        row = [loc + (" *" if loc in small else "") if loc != "global" else "global (pooled)",
               str(sum(sizes.values()) if loc == "global" else sizes[loc])]
        for r in recs:
            ev = r["evals"]["test"]
            e = ev["global"] if loc == "global" else ev["locales"].get(loc)
            row.append(format_ci(e.get("r_at_p"), e.get("r_at_p_ci")) if e else "-")
        rows.append(row)
    if any(_dep(r["evals"]["test"]) for r in recs):
        rows.append(["global (as deployed)", str(sum(sizes.values()))]
                    + [format_deployed(_dep(r["evals"]["test"])) for r in recs])
    return header, rows


def global_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one row per model with its two global figures, pooled R@P and recall
    as deployed (with the precision reached), and the locales whose test precision as deployed
    falls short of the target."""
    recs = _main_records(results)
    rap = _rap_name(results)
    p = ((results["sections"]["main"].get("settings") or {}).get("precision")) or 0.8
    header = ["model", "models", f"global {rap} (pooled)", "global recall as deployed (precision reached)",
              f"locales below P{p * 100:g} as deployed"]
    rows = []
    for r in recs:
        ev = r["evals"]["test"]
        g = ev["global"]
        d = ev.get("deployed")
        if d:
            short = [loc for loc, e in (d.get("locales") or {}).items()
                     if e.get("n_predicted") and not e.get("reached")]
            below = f"{len(short)} of {len(d.get('locales') or {})}" + (f" ({', '.join(short)})" if short else "")
        else:
            below = "-"
        rows.append([r["label"], (r.get("infra") or {}).get("networks"), format_ci(g.get("r_at_p"), g.get("r_at_p_ci")),
                     format_deployed(_dep(ev)), below])
    return header, rows


def headline_table(results: Mapping[str, Any]) -> str:
    """The headline table as plain text (what ``q2pt experiment`` prints)."""
    if not _main_records(results):
        return "(no main comparison in these results)"
    header, rows = headline_rows(results)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for k, r in enumerate(rows):
        if k == len(rows) - 1:
            lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    data = results.get("data") or {}
    what = "SIMULATED data" if data.get("simulated") else "user data"
    depth = f"; label depth {data['label_depth']}" if data.get("label_depth") is not None else ""
    lines.append(f"{_rap_name(results)} with 95% bootstrap CIs over queries on the test split; * small store; "
                 "global (pooled): one threshold for all locales; global (as deployed): each locale at its "
                 "threshold calibrated on valid (its own with enough validation positives, else the global one), "
                 "P= the precision reached on test; "
                 f"{what} {data.get('source')} (fingerprint {data.get('fingerprint')}){depth}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- sections


def _header(rep: Report, results: Mapping[str, Any]) -> None:
    data = results.get("data") or {}
    sections = results.get("sections") or {}
    if data.get("simulated"):
        rep.banner(f"**Data: SIMULATED.** These results were measured on q2pt's built-in simulated shop "
                 f"(`{data.get('source')}`, fingerprint `{data.get('fingerprint')}`), not on any real shop's "
                 "data: they say how the methods behave on that simulation.")
    else:
        rep.banner(f"**Data: user data** `{data.get('source')}` (fingerprint `{data.get('fingerprint')}`).")
    machine = results.get("machine") or {}
    rep.bullets([
        f"q2pt {results.get('q2pt_version')}; report rendered "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; results updated {results.get('updated')}",
        f"machine: {machine.get('cores')} cores ({machine.get('cores_available')} available), "
        f"{machine.get('cpu_model')}, {machine.get('memory_gb')} GiB RAM, {machine.get('platform')}, "
        f"Python {machine.get('python')}, torch {machine.get('torch', '-')}",
        "splits: " + ", ".join(f"{k} {v:,}" for k, v in (data.get("rows") or {}).items())
        + f"; {data.get('n_labels')} product types; {len(data.get('locales') or [])} locales"
        + (f"; label depth {data['label_depth']} (`data.label_depth`)" if data.get("label_depth") is not None
           else ""),
    ])
    commands = []
    for name in ["main", *STUDIES]:
        sec = sections.get(name)
        if sec and sec.get("command") and sec["command"] not in commands:
            commands.append(sec["command"])
    if commands:
        rep.para("Reproduce with:")
        rep.code("\n".join(commands), "bash")


def _main(rep: Report, results: Mapping[str, Any], figdir: Path) -> None:
    sec = results["sections"]["main"]
    recs = _main_records(results)
    rap = _rap_name(results)
    sizes = sec.get("train_sizes") or {}
    small = sec.get("small_stores") or []
    p = (sec.get("settings") or {}).get("precision", 0.8)
    boot = (sec.get("settings") or {}).get("bootstrap")
    rep.heading(f"Main comparison: {rap} per locale", anchor="main")
    rep.para(f"Every model is trained on the same train split and evaluated on the same test split "
             f"(encoder `{sec.get('encoder')}` for the q2pt variants). {rap}: the highest recall over all "
             f"(query, product type) pairs at a score threshold whose precision is at least {p:g}; product "
             f"types outside a model's label space count as missed. 95% confidence intervals: percentile "
             f"bootstrap over queries ({boot} resamples). Locales are ordered by training size; * marks a "
             f"small store ({sec.get('small_store_rule')}: {', '.join(small) or 'none'}).")
    header, rows = global_rows(results)
    rep.table(header, rows, "lrrrl")
    rep.para(deployed_note(p, rap))
    for r in recs:  # a store with test rows but no training rows: a per-locale model has nothing for it
        unserved = r["evals"]["test"].get("unserved_locale_rows") or {}
        if unserved:
            rep.para(f"{r['label']} has no network for {', '.join(f'{loc} ({n} test rows)' for loc, n in unserved.items())} "
                     "(no training rows there): those pairs count as missed.")
    if any(not _dep(r["evals"]["test"]) for r in recs):
        rep.para("`-` as deployed: the record was written before the as-deployed figures existed; running the "
                 "experiment again redoes those runs.")
    rep.heading(f"{rap} per locale", level=3, anchor="main-per-locale")
    rep.para(f"Each locale's own {rap} (its best threshold on its test queries), then the two global figures.")
    header, rows = headline_rows(results)
    rep.table(header, rows, "lr" + "r" * (len(header) - 2))
    _training_note(rep, sec, recs)
    locales = list(sizes)
    values = {r["label"]: {loc: ((r["evals"]["test"]["locales"].get(loc) or {}).get("r_at_p"),
                                 (r["evals"]["test"]["locales"].get(loc) or {}).get("r_at_p_ci")) for loc in locales}
              for r in recs}
    for r in recs:
        g = r["evals"]["test"]["global"]
        values[r["label"]]["global (pooled)"] = (g.get("r_at_p"), g.get("r_at_p_ci"))
        d = _dep(r["evals"]["test"]) or {}
        values[r["label"]]["global as deployed"] = (d.get("recall"), d.get("recall_ci"))
    path = F.plot_rap_by_locale(values, [*locales, "global (pooled)", "global as deployed"],
                                figdir / "rap_by_locale.png", precision=p, small=small,
                                title=f"{rap} per locale, global {rap} (pooled) and global recall as deployed, "
                                      "95% bootstrap CIs (* small store)", ylabel=f"{rap} / recall")
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"{rap} per locale and globally (pooled), and the global recall "
                                              "as deployed, 95% bootstrap CIs")
    _deployed_per_locale(rep, recs, locales, small, p)
    _failing_types(rep, recs, locales, small)
    _tree_levels(rep, recs, rap, figdir)

    # the paper's table
    gains = sec.get("gains") or []
    if gains:
        others = list(gains[0]["gains"])
        rep.heading("Unified vs non-unified: gains per locale (the paper's table)", anchor="gains")
        rep.para(f"{rap} of the non-unified models (one per locale) and, for each unified variant, its gain over "
                 f"them in points (100 x difference of {rap}; positive: the unified model is better). Locales "
                 "by training size, largest first; **small** stores marked.")
        header = ["locale", "train queries", "small", f"non-unified {rap}"] + [f"{o} {rap}" for o in others] + \
                 [f"{o} gain" for o in others]
        rows = []
        for g in gains:
            rows.append(["global (pooled)" if g["locale"] == "global" else g["locale"], f"{g['n_train']:,}",
                         "**small**" if g["small"] else "", _f(g["base"])]
                        + [_f(g["values"][o]) for o in others] + [_gain(g["gains"][o]) for o in others])
        rep.table(header, rows, "lrlr" + "r" * (2 * len(others)))
        per_loc = [g for g in gains if g["locale"] != "global"]
        path = F.plot_gains({o: [g["gains"][o] for g in per_loc] for o in others}, [g["locale"] for g in per_loc],
                            figdir / "gains.png", small=small)
        rep.figure(path, f"{FIG_DIR}/{path.name}", "Gain of each unified variant over non-unified per locale")

    # PR curves
    rep.heading("Precision-recall curves", anchor="pr-curves")
    curves = {r["label"]: r["evals"]["test"].get("pr_curves", {}).get("global", {}) for r in recs}
    path = F.plot_pr_curves(curves, figdir / "pr_curves.png", precision=p)
    rep.figure(path, f"{FIG_DIR}/{path.name}", "Global precision-recall curves over all (query, product type) pairs")
    locale_curves = {r["label"]: r["evals"]["test"].get("pr_curves", {}) for r in recs}
    path = F.plot_locale_pr_curves(locale_curves, locales, figdir / "pr_curves_locales.png", precision=p, small=small)
    rep.figure(path, f"{FIG_DIR}/{path.name}", "Precision-recall curves per locale (by training size)")

    # infrastructure
    rep.heading("Infrastructure: training cost, memory, size", anchor="infrastructure")
    rep.para("Measured in the experiment's process while each model trained on this machine. **Peak memory**: "
             + str(sec.get("memory_method")) + ". **Size on disk**: the saved model folder(s) (q2pt: weights as "
             "safetensors + encoder assets + manifest; fastText: its binary models; TF-IDF: coefficients as .npz + "
             "vocabulary JSON; USE / USE + e5 + LR: safetensors + features.json). **Models**: separately trained networks, "
             "i.e. model folders to deploy "
             "and checkpoint (one per locale for non-unified and per-locale baselines). **Parameters**: "
             "every distinct weight tensor once (networks may share a frozen pre-trained table); trainable in "
             "brackets (USE / USE + e5 + LR: the classifiers', their frozen encoders not counted). **Predict**: "
             "scoring the test split in one call. The frozen-embedding baselines embed each distinct query once "
             "per process (their runs share a cache): each run's train time and predict rate include its own "
             "queries' embeddings at the cost per query measured, whichever run computed them.")
    header = ["model", "models", "parameters (trainable)", "train time", "train CPU", "peak memory +MiB",
              "size on disk (MiB)", "predict (queries/s)"]
    cost_rows = []
    infra_rows = []
    for r in recs:
        i = r.get("infra") or {}
        params = "-" if not i.get("parameters") else f"{i['parameters']:,}" + (
            f" ({i['trainable_parameters']:,})" if i.get("trainable_parameters") is not None else "")
        cost_rows.append([r["label"], i.get("networks"), params,
                          _secs(i.get("train_seconds")), _secs(i.get("train_cpu_seconds")),
                          _f(i.get("train_peak_rss_increase_mb"), 0), _mb(i.get("model_bytes")),
                          _f(i.get("predict_queries_per_second"), 0)])
        infra_rows.append({"label": r["label"], **i})
    rep.table(header, cost_rows)
    path = F.plot_infra(infra_rows, figdir / "infrastructure.png")
    rep.figure(path, f"{FIG_DIR}/{path.name}", "Training time, peak memory increase, size on disk, models to deploy")
    total = sum(float((r.get("infra") or {}).get("train_seconds") or 0) for r in recs)
    now = sec.get("trained_now") or []
    rep.para(f"Total training time of the main comparison: {_secs(total)}. The last invocation took "
             f"{_secs(sec.get('elapsed_seconds'))} of wall time for training and evaluation and trained "
             f"{len(now)} of the {len(recs)} models (the others came from `results.json`).")


def _deployed_per_locale(rep: Report, recs: Sequence[Mapping[str, Any]], locales: Sequence[str],
                         small: Sequence[str], p: float) -> None:
    """Per locale: recall as deployed and the precision it reached on test, per model."""
    if not any(_dep(r["evals"]["test"]) for r in recs):
        return
    rep.heading("Recall as deployed per locale", level=3, anchor="main-deployed")
    rep.para(f"Each locale's test queries at the threshold calibrated on its validation queries for precision "
             f"{p:g} (or the global one, see above): recall with its 95% bootstrap CI and `P=` the precision "
             f"reached on test. A precision well under {p:g} means the validation threshold does not carry over "
             "to test for that locale (few validation queries, or a shift between the splits).")
    header = ["locale"] + [r["label"] for r in recs]
    rows = []
    for loc in locales:
        rows.append([loc + (" *" if loc in small else "")]
                    + [format_deployed(_dep(r["evals"]["test"], loc)) for r in recs])
    rows.append(["global"] + [format_deployed(_dep(r["evals"]["test"])) for r in recs])
    rep.table(header, rows)


def _tree_levels(rep: Report, recs: Sequence[Mapping[str, Any]], rap: str, figdir: Path) -> None:
    """Hierarchical models: their figures per level of the tree, hierarchical precision and
    recall, and coverage (the share of test queries given some type at a threshold that reached
    the precision target on validation)."""
    trees = [r for r in recs if (r["evals"]["test"].get("tree") or {}).get("levels")]
    if not trees:
        return
    rep.heading("Per level of the product-type tree", level=3, anchor="main-levels")
    rep.para(f"The q2pt models learned every level of the product-type tree (`model.hierarchy`); the tables above "
             f"judge them on the data's own types, like the baselines. Here: {rap} per level (each level's types "
             "only, the true paths cut to that level), **hierarchical** precision and recall (a model's answers -- "
             "the deepest confident types, backing off to the parent -- and the true types, both with their "
             "ancestors, at the model's per-level thresholds), and **coverage**: the share of test queries that "
             "got some type at a threshold that reached the target precision on validation (a level whose "
             "threshold never reached it answers, but does not count).")
    depth = max(int(k) for r in trees for k in r["evals"]["test"]["tree"]["levels"])
    header = ["model"] + [f"level {k} {rap}" for k in range(1, depth + 1)] + [
        f"leaf {rap}", "hierarchical precision", "hierarchical recall", "coverage"]
    rows, bars = [], []
    for r in trees:
        t = r["evals"]["test"]["tree"]
        cells = []
        for k in range(1, depth + 1):
            g = ((t["levels"].get(str(k)) or {}).get("global") or {})
            cells.append(format_ci(g.get("r_at_p"), g.get("r_at_p_ci")))
            bars.append((f"{r['label']} L{k}", g.get("r_at_p"), g.get("r_at_p_ci")))
        leaf = (t.get("leaf") or {}).get("global") or {}
        cells.append(format_ci(leaf.get("r_at_p"), leaf.get("r_at_p_ci")))
        bars.append((f"{r['label']} leaf", leaf.get("r_at_p"), leaf.get("r_at_p_ci")))
        h = (t.get("hierarchical") or {}).get("global") or {}
        rows.append([r["label"], *cells, format_ci(h.get("precision"), h.get("precision_ci")),
                     format_ci(h.get("recall"), h.get("recall_ci")), _f(h.get("coverage"))])
    rep.table(header, rows, "l" + "r" * (len(header) - 1))
    path = F.plot_bars(bars, figdir / "levels.png", ylabel=rap, title=f"{rap} per level of the tree, 95% bootstrap CIs")
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"{rap} per level of the product-type tree")
    # per locale: each hierarchical model's R@P per level and at the leaves, with 95% CIs
    locales = sorted({loc for r in trees for lv in r["evals"]["test"]["tree"]["levels"].values()
                      for loc in (lv.get("locales") or {})})
    if locales:
        rep.para(f"Per locale ({rap} per level and at the leaves, 95% bootstrap CIs):")
        header = ["locale"] + [f"{r['label']}: {name}" for r in trees
                               for name in [*(f"L{k}" for k in range(1, depth + 1)), "leaf"]]
        rows = []
        for loc in locales:
            cells = []
            for r in trees:
                t = r["evals"]["test"]["tree"]
                for entry in [*(t["levels"].get(str(k)) for k in range(1, depth + 1)), t.get("leaf")]:
                    e = ((entry or {}).get("locales") or {}).get(loc) or {}
                    cells.append(format_ci(e.get("r_at_p"), e.get("r_at_p_ci")))
            rows.append([loc, *cells])
        rep.table(header, rows, "l" + "r" * (len(header) - 1))


def _failing_types(rep: Report, recs: Sequence[Mapping[str, Any]], locales: Sequence[str],
                   small: Sequence[str]) -> None:
    """The product types that fail most, as deployed, for the default q2pt model (unified-aware)."""
    with_types = [r for r in recs if ((r["evals"]["test"].get("deployed") or {}).get("types"))]
    if not with_types:
        return
    rec = next((r for r in with_types if r.get("name") == "unified-aware"), with_types[0])
    types = rec["evals"]["test"]["deployed"]["types"]
    rep.heading(f"Product types that fail most: {rec['label']}", level=3, anchor="main-types")
    rep.para("At the thresholds the model is deployed with (each test query at its locale's calibrated threshold): "
             "per product type its support (test queries with it), how often it was predicted, precision, recall, "
             "and errors = misses + false alarms, the ranking. The full per-type table of every model is in "
             "`results.json` (`evals.test.deployed.types`).")
    rows = [[t["type"], t["support"], t["predicted"], _f(t["precision"]), _f(t["recall"]), t["errors"]]
            for t in types.get("failing", [])]
    rep.table(["product type", "support", "predicted", "precision", "recall", "errors"], rows, "lrrrrr")
    per_loc = types.get("locales") or {}
    rows = []
    for loc in locales:
        worst = (per_loc.get(loc) or {}).get("failing", [])[:3]
        cells = [f"{t['type']} (recall {_f(t['recall'])}, precision {_f(t['precision'])}, {t['errors']} errors)"
                 for t in worst]
        rows.append([loc + (" *" if loc in small else "")] + cells + [""] * (3 - len(cells)))
    rep.table(["locale", "fails most", "second", "third"], rows, "llll")


def _training_note(rep: Report, sec: Mapping[str, Any], recs: Sequence[Mapping[str, Any]]) -> None:
    """How much training each q2pt variant got (budget, epochs, optimiser steps per network)."""
    settings = sec.get("settings") or {}
    cfgs = sec.get("training_config") or {}
    cfg = next(iter(cfgs.values()), None) or {}
    train = cfg.get("train") or {}
    parts = []
    for r in recs:
        if r["kind"] != "variant":
            continue
        steps = (r.get("infra") or {}).get("steps_per_network") or {}
        if not steps:
            continue
        if len(steps) == 1:
            parts.append(f"{r['name']}: {next(iter(steps.values())):,} steps")
        else:
            lo = min(steps, key=lambda k: steps[k])
            hi = max(steps, key=lambda k: steps[k])
            parts.append(f"{r['name']}: {len(steps)} networks, {steps[lo]:,} ({lo}) to {steps[hi]:,} ({hi}) steps")
    if not parts:
        return
    min_steps = train.get("min_steps") or 0
    text = (f"Training budget `{settings.get('budget')}`: at most {train.get('max_epochs')} epochs (early stopping "
            f"patience {train.get('patience')}), batch size {train.get('batch_size')}"
            + (f", at least {min_steps:,} optimiser steps per network (more epochs for small stores)" if min_steps else "")
            + "; optimiser steps per network: " + "; ".join(parts) + ".")
    if settings.get("budget") in ("tiny", "demo", "quick"):
        text += (" This is a short budget, not training to convergence as in the paper: "
                 + ("each per-locale network gets at least the minimum number of steps, but the gap between "
                    "non-unified and unified models may still differ from fully trained ones."
                    if min_steps else
                    "with the same number of epochs, a per-locale network of a small store gets far fewer optimiser "
                    "steps than a unified network, which widens the gap between non-unified and unified models "
                    "compared with fully trained ones."))
    rep.para(text)


def _data_size(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    loc = sec["locale"]
    rep.heading(f"Study: data size ({loc})", anchor="study-data-size")
    rep.para(f"{rap} on `{loc}`'s test split ({sec['test_rows']} queries) as its training data shrinks and grows. "
             f"`1x` = {sec['reference_size']:.0f} training queries: {loc}'s {sec['locale_train_rows']} training "
             "queries divided by the largest fraction, so that the largest size uses all of them (the pool the "
             "larger sizes borrow from); smaller sizes are prefixes of one shuffle. Other stores keep all their "
             "data; non-unified trains on this store alone. 95% bootstrap CIs.")
    variants = list(dict.fromkeys(r["variant"] for r in sec["rows"]))
    fracs = sorted({r["fraction"] for r in sec["rows"]})
    by = {(r["fraction"], r["variant"]): r for r in sec["rows"]}
    rows = []
    for f in fracs:
        n = next(r["n_train_locale"] for r in sec["rows"] if r["fraction"] == f)
        rows.append([f"{f:g}x", n] + [format_ci(by[(f, v)]["r_at_p"], by[(f, v)]["r_at_p_ci"])
                                      if (f, v) in by else "-" for v in variants])
    rep.table(["size", f"{loc} train queries"] + variants, rows)
    series = {v: [(f, by[(f, v)]["r_at_p"], by[(f, v)]["r_at_p_ci"]) for f in fracs if (f, v) in by]
              for v in variants}
    path = F.plot_lines(series, figdir / "study_data_size.png", xlabel=f"{loc} training data (x reference size)",
                        ylabel=f"{rap} on {loc}", title=f"{rap} of {loc} vs its training data", logx=True)
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"{rap} of {loc} as its training data changes (95% CI bands)")


def _cold_start(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    loc = sec["locale"]
    rep.heading(f"Study: cold start of a new store ({loc})", anchor="study-cold-start")
    rep.para(f"`{loc}` is left out of training entirely (its train and valid rows removed); the models are "
             f"evaluated on its test split ({sec['test_rows']} queries). The locale-aware model is given either "
             f"`{loc}`'s id, unseen in training (it then predicts without a locale token), or the id of the "
             f"nearest training store, `{sec['nearest']}` ({sec['nearest_how']}).")
    rows = [[r["model"], r["locale_id"], format_ci(r["r_at_p"], r["r_at_p_ci"]), _f(r.get("pr_auc"))]
            for r in sec["rows"]]
    rep.table(["model", "locale id given", f"{rap} [95% CI]", "PR-AUC"], rows, "llrr")
    ref = sec.get("reference_with_training_data")
    if ref:
        rep.para(f"For reference, with `{loc}`'s training data (main comparison): " + "; ".join(
            f"{v} {format_ci(e.get('r_at_p'), e.get('r_at_p_ci'))}" for v, e in ref.items()) + ".")
    sims = sec.get("similarities") or {}
    if sims:
        top = sorted(sims.items(), key=lambda kv: -kv[1])[:5]
        rep.para("Most similar training stores (cosine of character-trigram profiles): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in top) + ".")
    path = F.plot_bars([(f"{r['model']}\n{r['locale_id']}", r["r_at_p"], r["r_at_p_ci"]) for r in sec["rows"]],
                       figdir / "study_cold_start.png", ylabel=f"{rap} on {loc}", title=f"New store {loc}")
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"{rap} on the unseen store {loc} (95% CIs)")


def _pretraining(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    rep.heading("Study: pre-training", anchor="study-pretraining")
    rep.para(f"The `{sec['variant']}` variant with different encoders, same data and training settings "
             "(each encoder's own learning-rate defaults). 95% bootstrap CIs.")
    if sec["rows"]:
        rows = [[r["encoder"] + (" (main comparison's model)" if r.get("reused_from") else ""), r["description"],
                 format_ci(r["r_at_p"], r["r_at_p_ci"]), _f(r.get("pr_auc")),
                 _secs(r.get("train_seconds")), f"{r['parameters']:,}" if r.get("parameters") else "-"]
                for r in sec["rows"]]
        rep.table(["encoder", "what", f"{rap} [95% CI]", "PR-AUC", "train time", "parameters"], rows, "llrrrr")
        path = F.plot_bars([(r["encoder"], r["r_at_p"], r["r_at_p_ci"]) for r in sec["rows"]],
                           figdir / "study_pretraining.png", ylabel=f"global {rap}", title="Encoders")
        rep.figure(path, f"{FIG_DIR}/{path.name}", f"Global {rap} per encoder (95% CIs)")
    for s in sec.get("skipped") or []:
        rep.para(f"Skipped `{s['encoder']}`: {s['reason']}.")


def _label_noise(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    rep.heading("Study: label noise", anchor="study-label-noise")
    rep.para("A share of the (query, product type) labels of the train and valid splits is corrupted -- half "
             "dropped, half replaced by a product type drawn from the training label distribution; queries left "
             f"without a label are removed -- and the models are evaluated on the clean test labels. Global {rap}, "
             "95% bootstrap CIs.")
    variants = list(dict.fromkeys(r["variant"] for r in sec["rows"]))
    rates = sorted({r["rate"] for r in sec["rows"]})
    by = {(r["rate"], r["variant"]): r for r in sec["rows"]}
    rows = []
    for rate in rates:
        c = (sec.get("corruption") or {}).get(f"{rate:g}", {}).get("train", {})
        rows.append([f"{rate:g}", f"{c.get('dropped', 0)} / {c.get('replaced', 0)} / {c.get('rows_removed', 0)}"]
                    + [format_ci(by[(rate, v)]["r_at_p"], by[(rate, v)]["r_at_p_ci"]) if (rate, v) in by else "-"
                       for v in variants])
    rep.table(["noise rate", "train labels dropped / replaced / queries removed"] + variants, rows)
    if any(r.get("reused_from") for r in sec["rows"]):
        rep.para("Noise rate 0 is the main comparison's training data: those models are the main comparison's "
                 "(their results, with its bootstrap resamples, are reused).")
    series = {v: [(rate, by[(rate, v)]["r_at_p"], by[(rate, v)]["r_at_p_ci"]) for rate in rates if (rate, v) in by]
              for v in variants}
    path = F.plot_lines(series, figdir / "study_label_noise.png", xlabel="share of training labels corrupted",
                        ylabel=f"global {rap} (clean test)", title="Label noise")
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"Global {rap} on clean test labels vs label noise (95% CI bands)")


def _head(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    rep.heading("Study: classification head", anchor="study-head")
    rep.para(f"The `{sec['variant']}` variant with a linear head (the paper's) or hidden ReLU layers "
             "(`model.head_hidden`). 95% bootstrap CIs.")
    rows = [[r["head"] + (" (main comparison's model)" if r.get("reused_from") else ""),
             format_ci(r["r_at_p"], r["r_at_p_ci"]), _f(r.get("pr_auc")), _secs(r.get("train_seconds")),
             f"{r['parameters']:,}" if r.get("parameters") else "-"] for r in sec["rows"]]
    rep.table(["head", f"{rap} [95% CI]", "PR-AUC", "train time", "parameters"], rows, "lrrrr")
    path = F.plot_bars([(r["head"], r["r_at_p"], r["r_at_p_ci"]) for r in sec["rows"]],
                       figdir / "study_head.png", ylabel=f"global {rap}", title="Classification head")
    rep.figure(path, f"{FIG_DIR}/{path.name}", f"Global {rap} per head (95% CIs)")


def _conflicts(rep: Report, sec: Mapping[str, Any], rap: str, figdir: Path) -> None:
    rep.heading("Study: locale conflicts", anchor="study-locale-conflicts")
    rep.para(f"Queries whose product type differs between stores ({sec['definition']}); {sec['n_queries']} test "
             f"queries. Top-1 accuracy: the share whose highest-scoring product type is the store's own ("
             f"{sec['truth']}).")
    words = sec.get("words") or {}
    if words:
        rep.para("Words: " + "; ".join(f"`{w}` ({', '.join(locs)})" for w, locs in sorted(words.items())) + ".")
    locales = sorted({loc for r in sec["rows"] for loc in (r.get("locales") or {})})
    rows = []
    for r in sec["rows"]:
        rows.append([r["model"], r.get("n"), _f(r.get("accuracy"))]
                    + [_f((r["locales"].get(loc) or {}).get("accuracy"), 2) for loc in locales])
    rep.table(["model", "queries", "top-1 accuracy"] + locales, rows)
    if sec["rows"]:
        path = F.plot_bars([(r["model"], r.get("accuracy"), None) for r in sec["rows"]],
                           figdir / "study_locale_conflicts.png", ylabel="top-1 accuracy",
                           title="Locale-conflict queries: store's own type ranked first")
        rep.figure(path, f"{FIG_DIR}/{path.name}", "Top-1 accuracy on locale-conflict queries")
        ex = next((r.get("examples") for r in sec["rows"] if r.get("examples")), None)
        if ex:
            rep.para(f"Examples ({sec['rows'][0]['model']}):")
            rep.table(["query", "locale", "predicted", "expected", "correct"],
                      [[e["query"], e["locale"], e["predicted"], ", ".join(e["expected"]), "yes" if e["correct"] else "no"]
                       for e in (sec["rows"][0].get("examples") or [])[:8]], "lllll")


_STUDY_RENDERERS = {
    "data-size": _data_size,
    "cold-start": _cold_start,
    "pretraining": _pretraining,
    "label-noise": _label_noise,
    "head": _head,
    "locale-conflicts": _conflicts,
}


def _configuration(rep: Report, results: Mapping[str, Any]) -> None:
    sections = results.get("sections") or {}
    main = sections.get("main")
    rep.heading("Configuration", anchor="configuration")
    if main and main.get("training_config"):
        cfg = next(iter(main["training_config"].values()))
        rep.para("Training configuration of the main comparison (the variants differ only in `model.variant`):")
        rep.code(json.dumps(cfg, indent=2), "json")
        name = next(iter(main["training_config"]))
        rep.para(f"Each variant's is in `{CONFIGS_DIR}/VARIANT.yaml`: `q2pt train --config {CONFIGS_DIR}/{name}.yaml "
                 "--data DATA --out MODEL_DIR` trains that recipe on other data.")
    any_sec = main or next(iter(sections.values()), None)
    if any_sec and any_sec.get("settings"):
        rep.para("Experiment settings:")
        rep.code(json.dumps(any_sec["settings"], indent=2), "json")


def _prepare_output(out_dir: str | Path, results: Mapping[str, Any] | None) -> tuple[Path, Mapping[str, Any], Path]:
    """The output folder, the results (default: read from its ``results.json``) and a figure
    folder emptied of the previous report's figures."""
    out_dir = Path(out_dir)
    if results is None:
        results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    figdir = out_dir / FIG_DIR
    figdir.mkdir(parents=True, exist_ok=True)
    for old in figdir.glob("*.png"):
        old.unlink()
    return out_dir, results, figdir


def render_report(out_dir: str | Path, results: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir`` from
    ``results`` (default: ``out_dir/results.json``). Returns the written paths."""
    out_dir, results, figdir = _prepare_output(out_dir, results)
    data = results.get("data") or {}
    title = "q2pt experiment report" + (" (SIMULATED data)" if data.get("simulated") else "")
    rep = Report(title)
    _header(rep, results)
    sections = results.get("sections") or {}
    rap = _rap_name(results)
    if "main" in sections:
        _main(rep, results, figdir)
    for name in STUDIES:
        if name in sections:
            _STUDY_RENDERERS[name](rep, sections[name], rap, figdir)
    _configuration(rep, results)
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    write_text(md, rep.to_markdown())
    write_text(page, rep.to_html())
    return {"markdown": md, "html": page, "figures": figdir}


# --------------------------------------------------------------------------- folds


def _ms(stats: Mapping[str, Any] | None, digits: int = 3, *, spread: bool = True) -> str:
    """``0.612 ± 0.010 [0.600, 0.625]`` (mean ± sd [min, max] over folds), or ``-``."""
    if not stats or stats.get("mean") is None:
        return "-"
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("std") is not None:
        text += f" ± {stats['std']:.{digits}f}"
    if spread and stats.get("n", 0) > 1:
        text += f" [{stats['min']:.{digits}f}, {stats['max']:.{digits}f}]"
    return text


def _ms_deployed(recall: Mapping[str, Any] | None, precision: Mapping[str, Any] | None, *,
                 spread: bool = True) -> str:
    if not recall or recall.get("mean") is None:
        return "-"
    prec = (precision or {}).get("mean")
    return _ms(recall, spread=spread) + f" (P={'-' if prec is None else f'{prec:.3f}'})"


def _secs_ms(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "-"
    return _secs(stats["mean"]) + (f" ± {_secs(stats['std'])}" if stats.get("std") is not None else "")


def _folds_rap(results: Mapping[str, Any]) -> tuple[float, str]:
    p = float(results.get("precision") or 0.8)
    return p, f"R@P{p * 100:g}"


def _folds_global_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    _, rap = _folds_rap(results)
    header = ["model", "folds", f"global {rap} (pooled)", "global recall as deployed (precision reached)",
              "train time"]
    rows = []
    for m in (results.get("models") or {}).values():
        rows.append([m["label"], str(m.get("folds")), _ms(m["global_r_at_p"]),
                     _ms_deployed(m["global_deployed_recall"], m["global_deployed_precision"]),
                     _secs_ms(m.get("train_seconds"))])
    return header, rows


def folds_headline_table(results: Mapping[str, Any]) -> str:
    """The cross-validation's main table as plain text (what ``q2pt experiment --folds`` prints)."""
    header, rows = _folds_global_rows(results)
    if not rows:
        return "(no model in these folds' main comparisons)"
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    what = "SIMULATED data" if results.get("simulated") else "user data"
    depth = f"; label depth {results['label_depth']}" if results.get("label_depth") is not None else ""
    lines.append(f"mean ± sample sd [min, max] over {results.get('k')} folds of {results.get('data_dir')} "
                 f"({what}{depth}); pooled: one threshold for all locales; as deployed: each locale at its "
                 "threshold calibrated on valid (its own with enough validation positives, else the global one), "
                 "P= the mean precision reached on test")
    return "\n".join(lines)


def render_folds_report(out_dir: str | Path, results: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``report.md``, ``report.html`` and ``figures/*.png`` of a cross-validation (``results``:
    the aggregate ``results.json`` written by ``run_experiment(folds=K)``)."""
    out_dir, results, figdir = _prepare_output(out_dir, results)
    k = results.get("k")
    p, rap = _folds_rap(results)
    simulated = bool(results.get("simulated"))
    rep = Report(f"q2pt cross-validation report ({k} folds)" + (" (SIMULATED data)" if simulated else ""))
    folds = results.get("folds") or []
    if simulated:
        rep.banner(f"**Data: SIMULATED.** The {k} folds of `{results.get('data_dir')}` come from q2pt's built-in "
                   "simulated shop, not any real shop's data.")
    else:
        rep.banner(f"**Data: user data**, {k} folds of `{results.get('data_dir')}`.")
    unused = results.get("unused_folds") or []
    if unused:
        rep.banner(f"**Not every fold is used:** `{results.get('data_dir')}` also holds {', '.join(unused)}; their "
                   f"test queries are tested by none of the {k} folds run (run with --folds "
                   f"{int(k or 0) + len(unused)} for all of them).")
    machine = results.get("machine") or {}
    bullets = [
        f"q2pt {results.get('q2pt_version')}; report rendered "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}; results updated {results.get('updated')}",
        f"machine: {machine.get('cores')} cores ({machine.get('cores_available')} available), "
        f"{machine.get('cpu_model')}, {machine.get('memory_gb')} GiB RAM, Python {machine.get('python')}",
        f"K = {k} folds: " + ", ".join(f"`{f['data_dir']}`" for f in folds),
        "each fold's complete experiment output (its own report, results.json, resumable): "
        + ", ".join(f"`{f['out_dir']}`" for f in folds),
    ]
    if results.get("split_report"):
        bullets.append(f"how the folds were cut: `{results['split_report']}`")
    if results.get("label_depth") is not None:
        bullets.append(f"label depth {results['label_depth']} (`data.label_depth`)")
    rep.bullets(bullets)
    if results.get("command"):
        rep.para("Reproduce with:")
        rep.code(str(results["command"]), "bash")

    rep.heading(f"Main comparison over {k} folds", anchor="folds")
    rep.para(f"The main comparison ran on each fold (train on its train split, evaluate on its test split; "
             f"encoder `{results.get('encoder')}` for the q2pt variants). Each cell: mean ± sample standard "
             f"deviation [min, max] over the folds; training time is the mean ± sd per fold. Within a fold, "
             f"{rap} and its bootstrap CIs are in that fold's report.")
    header, rows = _folds_global_rows(results)
    rep.table(header, rows, "lrrrr")
    rep.para(deployed_note(p, rap))

    models = results.get("models") or {}
    locales = results.get("locales") or []
    sizes = results.get("train_sizes") or {}
    rep.heading(f"{rap} per locale", level=3, anchor="folds-per-locale")
    header = ["locale", "train (mean)"] + [m["label"] for m in models.values()]
    rows = []
    for loc in locales:
        mean = (sizes.get(loc) or {}).get("mean")
        rows.append([loc, "-" if mean is None else f"{mean:,.0f}"]
                    + [_ms((m["locales"].get(loc) or {}).get("r_at_p"), spread=False) for m in models.values()])
    rows.append(["global (pooled)", "-"] + [_ms(m["global_r_at_p"], spread=False) for m in models.values()])
    rows.append(["global (as deployed)", "-"] + [_ms_deployed(m["global_deployed_recall"], m["global_deployed_precision"],
                                                              spread=False) for m in models.values()])
    rep.table(header, rows)
    rep.heading("Recall as deployed per locale", level=3, anchor="folds-deployed")
    rep.para(f"Each locale at its threshold calibrated on the fold's validation split for precision {p:g}: "
             "recall mean ± sd over the folds, `P=` the mean precision reached on test.")
    header = ["locale"] + [m["label"] for m in models.values()]
    rows = [[loc] + [_ms_deployed((m["locales"].get(loc) or {}).get("deployed_recall"),
                                  (m["locales"].get(loc) or {}).get("deployed_precision"), spread=False)
                     for m in models.values()] for loc in locales]
    rep.table(header, rows)

    trees = [m for m in models.values() if m.get("tree")]
    if trees:
        depth = max(int(lv) for m in trees for lv in m["tree"]["levels"])
        rep.heading("Per level of the product-type tree", level=3, anchor="folds-levels")
        rep.para(f"The hierarchical models' {rap} per level (each level's types only, the true paths cut to it) "
                 "and at the leaves (the bottom types, at any depth), hierarchical precision and recall and "
                 "coverage (see each fold's report): mean ± sd over the folds.")
        header = ["model"] + [f"level {k} {rap}" for k in range(1, depth + 1)] + [
            f"leaf {rap}", "hierarchical precision", "hierarchical recall", "coverage"]
        rows = [[m["label"]] + [_ms(m["tree"]["levels"].get(str(k)), spread=False) for k in range(1, depth + 1)]
                + [_ms(m["tree"].get(key), spread=False) for key in ("leaf", "precision", "recall", "coverage")]
                for m in trees]
        rep.table(header, rows, "l" + "r" * (len(header) - 1))

    rep.heading("Per fold", level=3, anchor="folds-each")
    rep.para(f"Global {rap} (pooled) / global recall as deployed of every model on each fold.")
    header = ["fold", "data fingerprint", "train / valid / test queries"] + [m["label"] for m in models.values()]
    rows = []
    for i, f in enumerate(folds):
        d = f.get("data") or {}
        n = d.get("rows") or {}
        cells = []
        for m in models.values():
            a = m["global_r_at_p"]["values"][i] if i < len(m["global_r_at_p"]["values"]) else None
            b = (m["global_deployed_recall"]["values"][i]
                 if i < len(m["global_deployed_recall"]["values"]) else None)
            cells.append(f"{_f(a)} / {_f(b)}")
        rows.append([f["name"], f"`{d.get('fingerprint')}`",
                     " / ".join(f"{n.get(s, 0):,}" for s in ("train", "valid", "test"))] + cells)
    rep.table(header, rows, "lll" + "r" * len(models))

    def band(stats: Mapping[str, Any] | None) -> tuple[Any, Any]:
        if not stats or stats.get("mean") is None:
            return None, None
        sd = stats.get("std")
        return stats["mean"], (None if sd is None else [stats["mean"] - sd, stats["mean"] + sd])

    values = {}
    for m in models.values():
        v = {loc: band((m["locales"].get(loc) or {}).get("r_at_p")) for loc in locales}
        v["global (pooled)"] = band(m["global_r_at_p"])
        v["global as deployed"] = band(m["global_deployed_recall"])
        values[m["label"]] = v
    if values:
        path = F.plot_rap_by_locale(values, [*locales, "global (pooled)", "global as deployed"],
                                    figdir / "folds_rap_by_locale.png", precision=p,
                                    title=f"{rap} per locale and globally, mean over {k} folds (error bars: ± 1 sd)",
                                    ylabel=f"{rap} / recall")
        rep.figure(path, f"{FIG_DIR}/{path.name}", f"{rap} per locale, global {rap} (pooled) and global recall "
                                                  f"as deployed: mean over {k} folds, error bars ± 1 sd")
    if results.get("settings"):
        rep.heading("Configuration", anchor="configuration")
        rep.para("Experiment settings (the same for every fold):")
        rep.code(json.dumps(results["settings"], indent=2), "json")
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    write_text(md, rep.to_markdown())
    write_text(page, rep.to_html())
    return {"markdown": md, "html": page, "figures": figdir}
