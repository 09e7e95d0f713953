"""The model card: ``MODEL_CARD.md`` in every model folder, written from its manifest.

:func:`render_model_card` says, for the people who ship and use a model: what data it was
trained on (source, fingerprint, simulated or real, rows per locale), its variant, encoder and
parent model, its labels and locales, the validation metrics per locale with bootstrap CIs
and the thresholds, what it is meant for, and its known limits (locales with little data, how
an unseen locale is served). Everything comes from the manifest, so the card never disagrees
with the model; ``/v1/model/card`` serves it.
"""

from __future__ import annotations

from typing import Any, Mapping

from q2pt.metrics import stop_metric_label

__all__ = ["MODEL_CARD", "render_model_card"]

#: the card's file name in a model folder
MODEL_CARD = "MODEL_CARD.md"

#: below these counts a locale is listed under "known limits"
FEW_TRAINING_QUERIES = 200
FEW_VALIDATION_POSITIVES = 20


def threshold_floor(variant: str, train_cfg: Mapping[str, Any]) -> int:
    """The validation positives a locale of this model needed for a threshold of its own: the
    saved ``train.locale_threshold_min_positives`` (a manifest without it: 20, as q2pt then did),
    or the variant's default (:func:`q2pt.calibration.locale_min_positives`)."""
    from q2pt.calibration import locale_min_positives
    from q2pt.config import ADDED_KEYS

    key = "locale_threshold_min_positives"
    configured = train_cfg[key] if key in train_cfg else ADDED_KEYS[f"train.{key}"]
    return locale_min_positives(configured, variant != "non-unified")


_VARIANTS = {
    "non-unified": "one network per locale, each trained on its own locale's queries only",
    "unified-agnostic": "one network for every locale; it never sees the locale",
    "unified-aware": "one network for every locale; the query's locale token is prepended to the query",
}

_UNSEEN = {
    "non-unified": "refused (an UnknownLocaleError / HTTP 422) unless a fallback locale is configured, "
                   "whose network and threshold then serve it",
    "unified-agnostic": "served like any other locale (the model never uses the locale), with the global threshold",
    "unified-aware": "served locale-agnostically (no locale token; trained by train.locale_dropout) with the "
                     "global threshold, and the response says so",
}


def _f(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _ci(entry: Mapping[str, Any]) -> str:
    ci = entry.get("r_at_p_ci")
    return "-" if not ci or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _stop_metric(manifest: Mapping[str, Any], precision: float) -> str:
    """What early stopping watched, from the training summaries (``train.stop_metric``; a
    manifest written before the key: R@P)."""
    watched = {t.get("stop_metric", "r_at_p") for t in (manifest.get("training") or {}).values()
               if isinstance(t, Mapping)}
    return stop_metric_label("pr_auc" if watched == {"pr_auc"} else "r_at_p", precision)


def render_model_card(manifest: Mapping[str, Any]) -> str:
    """The markdown card of a model folder's manifest."""
    variant = manifest["variant"]
    encoder = manifest.get("encoder", {}).get("spec", "?")
    data = manifest.get("data", {})
    config = manifest.get("config", {})
    train_cfg, data_cfg = config.get("train", {}), config.get("data", {})
    labels, locales = list(manifest.get("labels", [])), list(manifest.get("locales", []))
    counts = data.get("locale_counts", {})
    train_counts = counts.get("train", {})
    metrics = manifest.get("metrics") or {}
    thresholds = manifest.get("thresholds", {})
    details = manifest.get("threshold_details", {})
    precision = train_cfg.get("precision_target", 0.8)
    rap = stop_metric_label("r_at_p", precision)
    simulated = bool(data.get("simulated"))

    lines = [f"# Model card: q2pt {variant} / {encoder}", "",
             f"Written by q2pt {manifest.get('q2pt_version', '?')} on {manifest.get('created', '?')}. "
             "Generated from `manifest.json` (the folder's fingerprint is the sha256 of that file).", ""]

    lines += ["## Data", "",
              f"- Source: `{data.get('source', '?')}` "
              f"({'SIMULATED: the built-in simulated store, not real queries' if simulated else 'real data, not simulated'})",
              f"- Data fingerprint: `{data.get('fingerprint', '?')}`",
              f"- Queries: {data.get('n_train', '?')} for training, {data.get('n_valid', '?')} for validation "
              "(early stopping and threshold calibration)"]
    depth = data_cfg.get("label_depth")
    if depth is not None:
        lines.append(f"- Product type paths cut to {depth} level(s) (`data.label_depth`)")
    lines.append("")

    parent: Mapping[str, Any] | None = manifest.get("parent") if isinstance(manifest.get("parent"), Mapping) else None
    epochs = train_cfg.get("max_epochs", "?")
    cap = train_cfg.get("warm_start_epochs")
    if parent is not None and isinstance(cap, int) and isinstance(epochs, int) and cap < epochs:
        epochs = f"{cap} (a warm start: `train.warm_start_epochs`)"
    lines += ["## Model", "",
              f"- Variant: **{variant}**: {_VARIANTS.get(variant, '')}",
              f"- Encoder: `{encoder}`",
              f"- Training: batch {train_cfg.get('batch_size', '?')}, up to {epochs} epochs, "
              f"early stopping on validation {_stop_metric(manifest, precision)} "
              f"(patience {train_cfg.get('patience', '?')}), seed "
              f"{train_cfg.get('seed', '?')}; the whole resolved config is in `manifest.json`",
              "- Parent model: " + (f"`{parent.get('path', '?')}` (fingerprint `{parent.get('fingerprint', '?')}`): "
                                    "this model was warm-started from it" if parent is not None
                                    else "none (trained from scratch)")]
    if parent is not None:
        label_map = parent.get("label_map") or {}
        if label_map:
            shown_map = ", ".join(f"`{a}` → `{b}`" for a, b in list(label_map.items())[:20])
            lines.append(f"- Label map from the parent: {shown_map}" + (" ..." if len(label_map) > 20 else ""))
        unknown = parent.get("label_map_unknown") or []
        if unknown:
            shown = ", ".join(f"`{a}`" for a in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            lines.append(f"- Not applied (not product types of the parent): {shown}")
        unknown_new = parent.get("label_map_unknown_new") or []
        if unknown_new:
            shown = ", ".join(f"`{a}`" for a in unknown_new[:10]) + (" ..." if len(unknown_new) > 10 else "")
            lines.append(f"- Not applied (new names that are not product types of the training data): {shown}")
        for stage, c in (parent.get("networks") or {}).items():
            name = "the network" if len(parent.get("networks") or {}) == 1 else f"network `{stage}`"
            lines.append(f"- From the parent, {name}: {c.get('types_kept', '?')} product types kept, "
                         f"{c.get('types_mapped', '?')} renamed or merged, {c.get('types_new', '?')} new, "
                         f"{c.get('types_dropped', '?')} dropped; {c.get('locales_kept', '?')} locales kept, "
                         f"{c.get('locales_new', '?')} new")
        if parent.get("fresh_networks"):
            lines.append(f"- Trained from scratch (no network in the parent): {', '.join(parent['fresh_networks'])}")
    training = manifest.get("training") or {}
    if training:
        steps = sum(int(t.get("steps") or 0) for t in training.values())
        lines.append(f"- {len(training)} network(s), {steps} optimiser steps in all")
    lines.append("")

    shown = ", ".join(f"`{x}`" for x in labels[:40])
    more = f" and {len(labels) - 40} more (all in `manifest.json`)" if len(labels) > 40 else ""
    lines += ["## Labels and locales", "",
              f"- {len(labels)} product types: {shown}{more}",
              f"- {len(locales)} locales: {', '.join(f'`{x}`' for x in locales)}", ""]

    lines += ["## Validation metrics", ""]
    if metrics:
        ci_level = (metrics.get("config") or {}).get("ci_level")
        served = ("the threshold each locale is served with" if not manifest.get("tree") else
                  "each locale's threshold over all the tree's nodes (a tree is served with one threshold per "
                  "level: the tree's section below)")
        lines += [f"{rap} on the validation split (pooled over its (query, type) pairs; 95% bootstrap CI over "
                  f"queries{'' if ci_level else ': not computed'}), and {served}:",
                  "", f"| locale | training queries | validation queries | positives | {rap} | 95% CI | threshold | "
                  "how the threshold was chosen |", "|---|---:|---:|---:|---:|---|---:|---|"]
        for loc, entry in (metrics.get("locales") or {}).items():
            t = thresholds.get(loc, thresholds.get("global"))
            how = details.get(loc) or f"global threshold ({details.get('global', '')})"
            lines.append(f"| {loc} | {train_counts.get(loc, '-')} | {entry.get('n_queries', '-')} | "
                         f"{entry.get('n_positives', '-')} | {_f(entry.get('r_at_p'))} | {_ci(entry)} | {_f(t, '.4f')} "
                         f"| {how} |")
        g = metrics.get("global") or {}
        lines.append(f"| **all (pooled)** | {data.get('n_train', '-')} | {g.get('n_queries', '-')} | "
                     f"{g.get('n_positives', '-')} | {_f(g.get('r_at_p'))} | {_ci(g)} | "
                     f"{_f(thresholds.get('global'), '.4f')} | {details.get('global', '')} |")
        lines += ["", "These figures are measured on the data that chose the stopping point and the thresholds: "
                  "they are optimistic. Measure on held-out rows with `q2pt evaluate --model DIR --data TEST`.", ""]
    else:
        lines += ["No validation data: the thresholds default to 0.5 and nothing was measured.", ""]

    tree = manifest.get("tree")
    if tree:
        levels = (metrics.get("levels") or {}) if metrics else {}
        level_t = (manifest.get("level_thresholds") or {}).get("global", {})
        lines += ["## Product type tree", "",
                  f"A hierarchical model (`model.hierarchy`): one output per node of a tree of "
                  f"{len(tree.get('parent', {}))} product types (paths split on `{tree.get('separator')}`); every "
                  "level is learned (a query is a positive of its types and their ancestors), each level has its "
                  "own threshold, and a prediction is the deepest confident type, backing off to its parent when "
                  "no child is confident.", "",
                  f"| level | validation {rap} | 95% CI | threshold |", "|---:|---:|---|---:|"]
        for level, entry in levels.items():
            g = entry.get("global") or {}
            lines.append(f"| {level} | {_f(g.get('r_at_p'))} | {_ci(g)} | {_f(level_t.get(str(level)), '.4f')} |")
        lines.append("")

    lines += ["## Intended use", "",
              "Predicting the product types a shopper means by a search query, in the locales listed above, "
              "as one signal of a search engine (query understanding, filtering, boosting). Multi-label: a "
              f"query gets every type whose score reaches its locale's threshold (calibrated for precision "
              f"{precision:g} on validation data), possibly none.", ""]

    limits = []
    small = [loc for loc in locales
             if (train_counts and int(train_counts.get(loc, 0)) < FEW_TRAINING_QUERIES)
             or int(((metrics.get("locales") or {}).get(loc) or {}).get("n_positives") or 0) < FEW_VALIDATION_POSITIVES]
    if small:
        shown_small = ", ".join(
            f"`{loc}` ({train_counts.get(loc, '?')} training queries, "
            f"{((metrics.get('locales') or {}).get(loc) or {}).get('n_positives', 0)} validation positives)"
            for loc in small)
        limits.append(f"Little data in {shown_small}: their figures are uncertain (see the CIs).")
    limits.append(f"A locale with fewer than {threshold_floor(variant, train_cfg)} validation positives, or whose own "
                  "never reach the precision target, uses the global threshold (the thresholds' table says "
                  "which).")
    limits.append(f"A locale not listed above is {_UNSEEN.get(variant, 'served as the variant allows')}.")
    limits.append("Product types outside the list above are never predicted; new types need a retrain "
                  "(`q2pt train --init-from` this folder).")
    if simulated:
        limits.append("Trained on SIMULATED data: its figures say nothing about real queries.")
    limits.append("Labels of the training data are the shop's own (clicks or judgments) and may be noisy or "
                  "incomplete; recall is measured against them.")
    lines += ["## Known limits", ""] + [f"- {x}" for x in limits]
    return "\n".join(lines) + "\n"
