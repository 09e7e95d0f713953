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

Every baseline has the estimator surface the experiment runner needs: ``fit(dataset)``,
``predict_proba(queries, locales)`` (``(n, len(classes_))`` in ``classes_`` order; a locale
a per-locale baseline has no model for scores 0 everywhere), ``classes_``, ``locales_``,
``n_networks`` (models to deploy) and ``save(folder)`` (used to measure the size on disk;
fastText's own binary format, and ``.npz``/JSON for the linear models -- never pickle).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from q2pt.data.schema import normalize_query
from q2pt.errors import ConfigError, require

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.data import Dataset

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "Baseline",
    "FastTextBaseline",
    "TfidfBaseline",
    "build_baseline",
    "baseline_identity",
    "baseline_label",
]

#: name -> (family, unified?)
BASELINES: dict[str, tuple[str, bool]] = {
    "fasttext-per-locale": ("fasttext", False),
    "fasttext-unified": ("fasttext", True),
    "tfidf-per-locale": ("tfidf", False),
    "tfidf-unified": ("tfidf", True),
}

_LABELS = {
    "fasttext-per-locale": "fastText OVA (per locale)",
    "fasttext-unified": "fastText OVA (unified)",
    "tfidf-per-locale": "TF-IDF + LR (per locale)",
    "tfidf-unified": "TF-IDF + LR (unified)",
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

_UNIFIED = "*"


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

    # ------------------------------------------------------------ training
    def fit(self, dataset: "Dataset") -> "Baseline":
        """Train on ``dataset.train`` (the valid split is not used: no early stopping)."""
        train = dataset.train
        if len(train) == 0:
            raise ConfigError("the dataset has no training examples")
        labels = _label_lists(train["product_types"])
        self.classes_ = sorted({x for row in labels for x in row})
        self.locales_ = sorted(train["locale"].astype(str).unique().tolist())
        queries = [normalize_query(q) for q in train["query"].astype(str)]
        locales = train["locale"].astype(str).tolist()
        if self.unified:
            groups = {_UNIFIED: np.arange(len(train))}
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
    def predict_proba(self, queries: Sequence[str], locales: Sequence[str]) -> np.ndarray:
        """Scores ``(n, len(classes_))``; rows of a locale without a model are all 0."""
        if not self.models:
            raise ConfigError(f"baseline {self.name} is not trained")
        queries = [normalize_query(str(q)) for q in queries]
        locales = [str(x) for x in locales]
        if len(queries) != len(locales):
            raise ValueError(f"got {len(queries)} queries but {len(locales)} locales")
        out = np.zeros((len(queries), len(self.classes_)), dtype=np.float32)
        col = {c: i for i, c in enumerate(self.classes_)}
        if self.unified:
            groups = {_UNIFIED: np.arange(len(queries))}
        else:
            arr = np.asarray(locales, dtype=object)
            groups = {loc: np.flatnonzero(arr == loc) for loc in sorted(set(locales))}
            unseen = sorted(set(groups) - set(self.models))
            if unseen:
                logger.warning("%s: no model for locale(s) %s: scores 0", self.name, ", ".join(unseen))
        for key, rows in groups.items():
            if key not in self.models or not len(rows):
                continue
            cols = np.asarray([col[c] for c in self.model_labels[key]], dtype=np.int64)
            scores = self._predict_one(self.models[key], [queries[i] for i in rows], [locales[i] for i in rows],
                                       self.model_labels[key])
            out[np.ix_(rows, cols)] = scores
        return out

    def _predict_one(self, model: Any, queries: list[str], locales: list[str], classes: list[str]) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------ saving
    def save(self, folder: str | Path) -> None:
        """Write the fitted models to ``folder`` (one sub-folder per model) and a manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key, model in self.models.items():
            sub = folder / ("unified" if key == _UNIFIED else f"locale-{key}")
            sub.mkdir(parents=True, exist_ok=True)
            self._save_one(model, sub)
        manifest = {
            "baseline": self.name,
            "params": self.params,
            "classes": self.classes_,
            "locales": self.locales_,
            "model_labels": {("unified" if k == _UNIFIED else k): v for k, v in self.model_labels.items()},
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


def baseline_identity(name: str, settings: Any) -> dict[str, Any]:
    """What identifies a baseline run: its family's effective hyper-parameters and the seed."""
    family, unified = BASELINES[name]
    defaults = FASTTEXT_DEFAULTS if family == "fasttext" else TFIDF_DEFAULTS
    overrides = settings.fasttext if family == "fasttext" else settings.tfidf
    return {"family": family, "unified": unified, "params": {**defaults, **overrides}, "seed": settings.seed}


def build_baseline(name: str, *, params: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> Baseline:
    """A fresh baseline by name (see :data:`BASELINES`); ``params`` maps a family
    ("fasttext", "tfidf") to hyper-parameter overrides."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    family, unified = BASELINES[name]
    fam_params = dict((params or {}).get(family, {}))
    defaults = FASTTEXT_DEFAULTS if family == "fasttext" else TFIDF_DEFAULTS
    unknown = sorted(set(fam_params) - set(defaults))
    if unknown:
        raise ConfigError(f"unknown {family} parameter(s) {', '.join(unknown)}; valid: {', '.join(defaults)}")
    cls = FastTextBaseline if family == "fasttext" else TfidfBaseline
    return cls(name=name, unified=unified, params=fam_params, seed=seed)
