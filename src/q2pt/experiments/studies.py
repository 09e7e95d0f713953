"""The paper's follow-up questions, each a study with its own report section.

Every study builds its runs (:class:`~q2pt.experiments.runner.RunSpec`), has the runner
train and evaluate them (resumably) and stores a section in ``results.json`` holding its
parameters and a table the report renders. Studies use ``study_bootstrap`` resamples for
their confidence intervals.

``data-size``
    R@P of a small store (default ``pl``) as its training data shrinks and grows. Its
    training rows are shuffled once (``seed``); ``1x`` is its training size divided by the
    largest fraction, so the largest fraction uses all of them (the *pool* the larger sizes
    borrow from) and every smaller size is a prefix of the same shuffle. The other stores
    keep all their data; the non-unified variant trains on the store alone. Evaluated on
    the store's whole test split.
``cold-start``
    A store left out of training entirely (default ``se``, train and valid rows removed):
    the locale-agnostic model, the locale-aware model given the unseen store id (it then
    predicts without a locale token), and the aware model given the id of the *nearest*
    training store (the one whose training queries' character-trigram profile is closest
    to the new store's unlabelled queries) -- on the new store's test split.
``pretraining``
    The same variant with the ``use`` encoder, the USE architecture without pre-trained
    weights (``use-scratch``), the hashed n-gram encoder and, with ``--hf-model``, a Hugging
    Face encoder.
``label-noise``
    A share of the (query, product type) labels of train and valid corrupted -- half
    dropped, half replaced by a type drawn from the training label distribution; rows left
    without labels are removed -- and the models evaluated on the clean test labels.
``head``
    The classification head: linear (the paper's) vs one or two hidden layers.
``locale-conflicts``
    Queries whose product type differs between stores: how often each model of the main
    comparison ranks the store's own type first (it uses, and if needed trains, the main
    comparison's models).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from q2pt.data.schema import CUT_NAMES
from q2pt.errors import ConfigError, Q2PTError

from .runner import EvalSet, ExperimentRunner, RunSpec, derive_dataset

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data import Dataset

logger = logging.getLogger("q2pt.experiments")

__all__ = ["STUDY_FUNCTIONS", "run_study", "nearest_locale", "corrupt_labels", "data_size_plan"]


def _ci(entry: dict[str, Any] | None) -> list[float | None] | None:
    return None if not entry else entry.get("r_at_p_ci")


def _point(entry: dict[str, Any] | None) -> float | None:
    return None if not entry else entry.get("r_at_p")


def _pick_locale(dataset: "Dataset", given: str | None, preferred: str, rank: int) -> str:
    """The study's store: ``given``; else ``preferred`` when the data has it (train and test);
    else the ``rank``-th smallest store by training size (0: smallest) that has test data."""
    if given:
        return given
    train_locs = set(dataset.train["locale"].astype(str))
    test_locs = set(dataset.test["locale"].astype(str))
    if preferred in train_locs and preferred in test_locs:
        return preferred
    sizes = dataset.train["locale"].astype(str).value_counts()
    candidates = [str(loc) for loc, _ in sorted(sizes.items(), key=lambda kv: (kv[1], kv[0])) if loc in test_locs]
    if not candidates:
        raise ConfigError(f"{dataset.source}: no locale has both training and test data")
    choice = candidates[min(rank, len(candidates) - 1)]
    logger.info("%s is not in the data: using %s (small store by training size)", preferred, choice)
    return choice


def _need_locale(dataset: "Dataset", locale: str, what: str, key: str) -> None:
    if locale not in set(dataset.train["locale"].astype(str)):
        raise ConfigError(
            f"{what}: locale {locale!r} has no training data in {dataset.source}; "
            f"choose one with --experiment.{key} LOCALE (locales: {', '.join(dataset.locales)})"
        )
    if locale not in set(dataset.test["locale"].astype(str)):
        raise ConfigError(f"{what}: locale {locale!r} has no test data in {dataset.source}; choose another "
                          f"with --experiment.{key} LOCALE")


# --------------------------------------------------------------------------- data-size


def data_size_plan(n_rows: int, fractions: list[float]) -> tuple[float, dict[float, int]]:
    """``1x`` (reference size) and the number of rows of each fraction for a store with
    ``n_rows`` training rows: the largest fraction uses all of them (at least 1 row each)."""
    top = max(max(fractions), 1.0)
    ref = n_rows / top
    return ref, {f: int(min(n_rows, max(1, round(f * ref)))) for f in fractions}


def study_data_size(runner: ExperimentRunner) -> dict[str, Any]:
    s = runner.settings
    data = runner.dataset
    loc = _pick_locale(data, s.data_size_locale, "pl", 0)
    _need_locale(data, loc, "data-size study", "data_size_locale")
    train = data.train
    is_loc = train["locale"].astype(str) == loc
    own = train[is_loc]
    others = train[~is_loc]
    ref, sizes = data_size_plan(len(own), s.data_size_fractions)
    order = np.random.default_rng([s.seed, 17]).permutation(len(own))
    test_loc = data.test[data.test["locale"].astype(str) == loc]
    valid_loc = data.valid[data.valid["locale"].astype(str) == loc]
    jobs = []
    for f in s.data_size_fractions:
        subset = own.iloc[np.sort(order[: sizes[f]])]
        for v in s.data_size_variants:
            if v == "non-unified":
                splits = {"train": subset, "valid": valid_loc, "test": test_loc}
            else:
                splits = {"train": pd.concat([others, subset]), "valid": data.valid, "test": data.test}
            ds = derive_dataset(data, splits, f"data-size {loc} x{f:g}")
            spec = RunSpec(f"data-size/{loc}/x{f:g}/{v}", "variant", v, f"{v} ({loc} x{f:g})",
                           config=runner.config_for(v), params={"study": "data-size", "locale": loc, "fraction": f})
            jobs.append((spec, ds, [EvalSet("locale", test_loc, bootstrap=s.study_bootstrap)], f, v))
    records = runner.run_all("data-size", [(sp, ds, ev) for sp, ds, ev, _, _ in jobs])
    rows = []
    for (spec, _ds, _, f, v), rec in zip(jobs, records):
        entry = rec["evals"]["locale"]["locales"].get(loc)
        rows.append({"fraction": f, "n_train_locale": sizes[f], "variant": v, "r_at_p": _point(entry),
                     "r_at_p_ci": _ci(entry), "run": spec.key})
    section = runner.section_header(
        "data-size", locale=loc, reference_size=ref, locale_train_rows=len(own), sizes={str(k): v for k, v in sizes.items()},
        test_rows=len(test_loc), variants=s.data_size_variants, rows=rows, runs=[r["key"] for r in records],
    )
    runner.store.put_section("data-size", section)
    return section


# --------------------------------------------------------------------------- cold-start


def nearest_locale(new_queries: list[str], frames: dict[str, list[str]]) -> tuple[str, dict[str, float]]:
    """The locale whose queries' character-trigram profile is closest (cosine) to
    ``new_queries``' profile; returns it and every locale's similarity."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from q2pt.data.schema import normalize_query

    locales = sorted(frames)
    if not locales:
        raise ConfigError("no training locale to compare the new store with")
    docs = [" ".join(normalize_query(q) for q in new_queries)]
    docs += [" ".join(normalize_query(q) for q in frames[loc]) for loc in locales]
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True)
    x = vec.fit_transform(docs)  # rows are L2-normalised: the dot product is the cosine
    sims = (x[1:] @ x[0].T).toarray().ravel()
    sim = {loc: round(float(v), 4) for loc, v in zip(locales, sims)}
    return locales[int(np.argmax(sims))], sim


def study_cold_start(runner: ExperimentRunner) -> dict[str, Any]:
    s = runner.settings
    data = runner.dataset
    loc = _pick_locale(data, s.cold_start_locale, "se", 1)
    _need_locale(data, loc, "cold-start study", "cold_start_locale")

    def without(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["locale"].astype(str) != loc]

    test_loc = data.test[data.test["locale"].astype(str) == loc]
    train_wo = without(data.train)
    # the new store's queries without labels (train/valid rows are not trained on)
    own_queries = pd.concat([data.train, data.valid])
    own_queries = own_queries[own_queries["locale"].astype(str) == loc]["query"].astype(str).tolist()
    by_loc = {str(k): g["query"].astype(str).tolist() for k, g in train_wo.groupby("locale")}
    if s.cold_start_nearest:
        if s.cold_start_nearest not in by_loc:
            raise ConfigError(f"cold-start study: nearest locale {s.cold_start_nearest!r} is not a training locale")
        nearest = s.cold_start_nearest
        sims: dict[str, float] = {}
        how = "given (--experiment.cold_start_nearest)"
    else:
        nearest, sims = nearest_locale(own_queries, by_loc)
        how = f"closest character-trigram profile to {loc}'s {len(own_queries)} unlabelled train/valid queries"
    ds = derive_dataset(data, {"train": train_wo, "valid": without(data.valid), "test": data.test},
                        f"cold-start without {loc}")
    b = s.study_bootstrap
    jobs = [
        (RunSpec(f"cold-start/{loc}/unified-agnostic", "variant", "unified-agnostic", "unified-agnostic",
                 config=runner.config_for("unified-agnostic"), params={"study": "cold-start", "locale": loc}),
         ds, [EvalSet("new-store", test_loc, bootstrap=b)]),
        (RunSpec(f"cold-start/{loc}/unified-aware", "variant", "unified-aware", "unified-aware",
                 config=runner.config_for("unified-aware"), params={"study": "cold-start", "locale": loc}),
         ds, [EvalSet("new-store", test_loc, bootstrap=b),
              EvalSet("nearest-id", test_loc, predict_locales=[nearest] * len(test_loc), bootstrap=b)]),
    ]
    records = runner.run_all("cold-start", jobs)
    agn, aware = records
    rows = [
        {"model": "unified-agnostic", "locale_id": "(none)", "entry": agn["evals"]["new-store"]["global"]},
        {"model": "unified-aware", "locale_id": f"{loc} (unseen: no locale token)",
         "entry": aware["evals"]["new-store"]["global"]},
        {"model": "unified-aware", "locale_id": f"{nearest} (nearest store)",
         "entry": aware["evals"]["nearest-id"]["global"]},
    ]
    table = [{"model": r["model"], "locale_id": r["locale_id"], "r_at_p": _point(r["entry"]),
              "r_at_p_ci": _ci(r["entry"]), "pr_auc": r["entry"].get("pr_auc")} for r in rows]
    reference = None
    main = runner.store.data["runs"]
    for v in ("unified-aware", "unified-agnostic", "non-unified"):
        rec = main.get(f"main/{v}")
        if rec and rec.get("data_fingerprint") == data.fingerprint:
            e = rec["evals"]["test"]["locales"].get(loc)
            if e:
                reference = reference or {}
                reference[v] = {"r_at_p": e.get("r_at_p"), "r_at_p_ci": e.get("r_at_p_ci")}
    section = runner.section_header(
        "cold-start", locale=loc, nearest=nearest, nearest_how=how, similarities=sims, test_rows=len(test_loc),
        rows=table, reference_with_training_data=reference, runs=[r["key"] for r in records],
    )
    runner.store.put_section("cold-start", section)
    return section


# --------------------------------------------------------------------------- pretraining


def study_pretraining(runner: ExperimentRunner) -> dict[str, Any]:
    s = runner.settings
    data = runner.dataset
    v = s.pretraining_variant
    encoders: list[tuple[str, str, str, dict[str, Any] | None]] = []  # (name, spec, description, options)
    for name in s.pretraining_encoders:
        if name == "use-scratch":
            encoders.append((name, "use", "USE architecture, random initialisation (no pre-training)",
                             {"pretrained": False}))
        elif name == "use":
            encoders.append((name, "use", "Universal Sentence Encoder multilingual v3, pre-trained", None))
        elif name == "ngram":
            encoders.append((name, "ngram", "hashed word and character n-grams, trained from scratch", None))
        else:
            encoders.append((name, name, "Hugging Face encoder", None))
    skipped: list[dict[str, str]] = []
    if s.hf_model:
        encoders.append((f"hf:{s.hf_model}", f"hf:{s.hf_model}", "Hugging Face encoder (--hf-model)", None))
    else:
        skipped.append({"encoder": "hf", "reason": "no --hf-model given (the Hugging Face hub is not reachable "
                                                   "offline: pass a local model folder)"})
    rows = []
    keys = []
    for name, spec_str, desc, options in encoders:
        try:
            options_eff = options
            if options is None and spec_str == runner.encoder:
                options_eff = None  # the main encoder keeps the user's options
            elif options is None:
                options_eff = {}
            config = runner.config_for(v, encoder=spec_str, encoder_options=options_eff)
            spec = RunSpec(f"pretraining/{name}/{v}", "variant", v, f"{v} / {name}", config=config,
                           params={"study": "pretraining", "encoder": name}, same_as=f"main/{v}")
            rec = runner.run_all("pretraining", [(spec, data, [EvalSet("test", data.test, bootstrap=s.study_bootstrap)])])[0]
        except Q2PTError as exc:
            logger.warning("pretraining study: %s skipped: %s", name, exc)
            skipped.append({"encoder": name, "reason": str(exc).splitlines()[0]})
            continue
        g = rec["evals"]["test"]["global"]
        keys.append(rec["key"])
        rows.append({
            "encoder": name, "description": desc, "r_at_p": _point(g), "r_at_p_ci": _ci(g),
            "pr_auc": g.get("pr_auc"), "train_seconds": rec["infra"].get("train_seconds"),
            "parameters": rec["infra"].get("parameters"),
            "locales": {k: e.get("r_at_p") for k, e in rec["evals"]["test"]["locales"].items()},
            "run": rec["key"], "reused_from": rec.get("reused_from"),
        })
    section = runner.section_header("pretraining", variant=v, rows=rows, skipped=skipped, runs=keys)
    runner.store.put_section("pretraining", section)
    return section


# --------------------------------------------------------------------------- label-noise


def corrupt_labels(frame: pd.DataFrame, rate: float, label_pool: list[str], weights: np.ndarray,
                   rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, int]]:
    """Corrupt a share ``rate`` of the (query, type) labels of ``frame``: each chosen label is
    dropped or (equally likely) replaced by a type drawn from ``label_pool`` with
    ``weights`` (not one the row has). Rows left without a label are removed."""
    labels = [[v] if isinstance(v, str) else [str(x) for x in v] for v in frame["product_types"]]
    p = weights / weights.sum()
    counts = {"labels": 0, "dropped": 0, "replaced": 0, "rows_removed": 0}
    new_labels: list[list[str]] = []
    for labs in labels:
        out: list[str] = []
        for lab in labs:
            counts["labels"] += 1
            if rng.random() >= rate:
                out.append(lab)
                continue
            if rng.random() < 0.5:
                counts["dropped"] += 1
                continue
            for _ in range(20):
                cand = label_pool[int(rng.choice(len(label_pool), p=p))]
                if cand not in labs and cand not in out:
                    out.append(cand)
                    counts["replaced"] += 1
                    break
            else:  # pragma: no cover - a row holding almost every type
                counts["dropped"] += 1
        new_labels.append(out)
    keep = np.asarray([bool(x) for x in new_labels])
    counts["rows_removed"] = int((~keep).sum())
    result = frame.copy()
    result["product_types"] = pd.Series([list(x) for x in new_labels], index=frame.index, dtype=object)
    if CUT_NAMES in result.columns:  # the names cut from a dropped or replaced label go with it
        result[CUT_NAMES] = [({k: v for k, v in below.items() if k in kept} or None) if isinstance(below, dict)
                             else below for below, kept in zip(result[CUT_NAMES].tolist(), new_labels)]
    return result[keep], counts


def study_label_noise(runner: ExperimentRunner) -> dict[str, Any]:
    s = runner.settings
    data = runner.dataset
    labels = [[v] if isinstance(v, str) else [str(x) for x in v] for v in data.train["product_types"]]
    pool = sorted({x for row in labels for x in row})
    freq = pd.Series([x for row in labels for x in row]).value_counts()
    weights = np.asarray([float(freq.get(x, 0)) for x in pool])
    jobs = []
    corruption: dict[str, Any] = {}
    for rate in s.noise_rates:
        rng = np.random.default_rng([s.seed, 23, int(round(rate * 1000))])
        train, ct = corrupt_labels(data.train, rate, pool, weights, rng)
        valid, cv = corrupt_labels(data.valid, rate, pool, weights, rng)
        corruption[f"{rate:g}"] = {"train": ct, "valid": cv}
        ds = derive_dataset(data, {"train": train, "valid": valid, "test": data.test}, f"label-noise {rate:g}")
        for v in s.noise_variants:
            spec = RunSpec(f"label-noise/{rate:g}/{v}", "variant", v, f"{v} (noise {rate:g})",
                           config=runner.config_for(v), params={"study": "label-noise", "rate": rate},
                           same_as=f"main/{v}")
            jobs.append((spec, ds, [EvalSet("test", data.test, bootstrap=s.study_bootstrap)], rate, v))
    records = runner.run_all("label-noise", [(sp, ds, ev) for sp, ds, ev, _, _ in jobs])
    rows = []
    for (spec, _, _, rate, v), rec in zip(jobs, records):
        g = rec["evals"]["test"]["global"]
        rows.append({"rate": rate, "variant": v, "r_at_p": _point(g), "r_at_p_ci": _ci(g),
                     "pr_auc": g.get("pr_auc"), "run": spec.key, "reused_from": rec.get("reused_from")})
    section = runner.section_header("label-noise", rates=s.noise_rates, variants=s.noise_variants,
                                    corruption=corruption, rows=rows, runs=[r["key"] for r in records])
    runner.store.put_section("label-noise", section)
    return section


# --------------------------------------------------------------------------- head


def study_head(runner: ExperimentRunner) -> dict[str, Any]:
    s = runner.settings
    data = runner.dataset
    v = s.head_variant
    jobs = []
    for hidden in s.head_options:
        name = "linear" if not hidden else "hidden " + "x".join(str(h) for h in hidden)
        spec = RunSpec(f"head/{'-'.join(map(str, hidden)) or 'linear'}/{v}", "variant", v, f"{v} / {name}",
                       config=runner.config_for(v, head_hidden=hidden), params={"study": "head", "hidden": hidden},
                       same_as=f"main/{v}")
        jobs.append((spec, data, [EvalSet("test", data.test, bootstrap=s.study_bootstrap)]))
    records = runner.run_all("head", jobs)
    rows = []
    for (spec, _, _), hidden, rec in zip(jobs, s.head_options, records):
        g = rec["evals"]["test"]["global"]
        rows.append({"head": "linear" if not hidden else f"{len(hidden)} hidden layer(s) {hidden}",
                     "hidden": hidden, "r_at_p": _point(g), "r_at_p_ci": _ci(g), "pr_auc": g.get("pr_auc"),
                     "train_seconds": rec["infra"].get("train_seconds"), "parameters": rec["infra"].get("parameters"),
                     "run": spec.key, "reused_from": rec.get("reused_from")})
    section = runner.section_header("head", variant=v, rows=rows, runs=[r["key"] for r in records])
    runner.store.put_section("head", section)
    return section


# --------------------------------------------------------------------------- locale-conflicts


def study_locale_conflicts(runner: ExperimentRunner) -> dict[str, Any]:
    # the main comparison's models (runs already in results.json are not retrained)
    main = runner.run_main()
    mask = runner.conflicts
    rows = []
    for key in main["runs"]:
        rec = runner.store.data["runs"][key]
        c = rec["evals"]["test"].get("conflicts") or {}
        rows.append({"model": rec["label"], "kind": rec["kind"], "name": rec["name"], "n": c.get("n"),
                     "accuracy": c.get("accuracy"), "locales": c.get("locales", {}),
                     "examples": c.get("examples", []), "run": key})
    test = runner.dataset.test
    words: dict[str, Any] = {}
    if "sim_conflict_word" in test.columns and mask.any():
        sub = test[mask]
        for word, g in sub.groupby(sub["sim_conflict_word"].astype(str)):
            words[word] = sorted(g["locale"].astype(str).unique().tolist())
    section = runner.section_header(
        "locale-conflicts",
        definition=("simulated data: test queries containing a word whose product type depends on the store "
                    "(sim_conflict_word)" if "sim_conflict_word" in test.columns else
                    "test queries whose normalised form occurs in another store with a disjoint set of product types"),
        truth=("the simulator's clean intended type of the query in its store (intent)" if "intent" in test.columns
               else "one of the query's product types in its store"),
        n_queries=int(mask.sum()), words=words, rows=rows, runs=[r["run"] for r in rows],
    )
    runner.store.put_section("locale-conflicts", section)
    return section


STUDY_FUNCTIONS: dict[str, Callable[[ExperimentRunner], dict[str, Any]]] = {
    "data-size": study_data_size,
    "cold-start": study_cold_start,
    "pretraining": study_pretraining,
    "label-noise": study_label_noise,
    "head": study_head,
    "locale-conflicts": study_locale_conflicts,
}


def run_study(runner: ExperimentRunner, name: str) -> dict[str, Any]:
    """Run one study by name (see :data:`q2pt.experiments.settings.STUDIES`)."""
    if name not in STUDY_FUNCTIONS:
        raise ConfigError(f"unknown study {name!r}; choose from {', '.join(STUDY_FUNCTIONS)} or all")
    return STUDY_FUNCTIONS[name](runner)
