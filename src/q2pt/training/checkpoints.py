"""Checkpoints of a training run: the loop state, weights, optimiser moments and RNG state
of the network in progress (``last/``) and of finished networks (``done/``), and the refusal
to resume a run made with other settings."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from q2pt.errors import ConfigError, ModelLoadError, Q2PTError, require
from q2pt.io import atomic_path, restore_interrupted_swap, write_json
from q2pt.model_folder import safe_name
from q2pt.training.optim import optimizer_to_tensors
from q2pt.weights import pack_state, read_safetensors

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "torch")  # a clear message when the torch extra is missing

if TYPE_CHECKING:  # pragma: no cover
    from q2pt.config import Config

logger = logging.getLogger(__name__)


#: 2: weights packed with pretrained deltas, row-sparse optimiser moments (1 still resumes)
CHECKPOINT_FORMAT = 2


READABLE_CHECKPOINT_FORMATS = (1, 2)


@dataclass
class LoopState:
    """Where a stage's loop is; all of it goes in a checkpoint's JSON."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches of the current epoch completed
    step: int = 0  # optimiser steps so far
    best_metric: float | None = None
    best_step: int | None = None
    best_epoch: float | None = None
    bad_evals: int = 0
    last_eval_step: int | None = None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LoopState":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class StageResult:
    """What training one network produced."""

    stage: str
    metric: str  # what early stopping watched on valid: "r_at_p" or "pr_auc"
    best_metric: float | None
    best_step: int | None
    best_epoch: float | None
    steps: int
    epochs: int
    stopped_early: bool
    history: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {
            "stop_metric": self.metric,
            f"best_valid_{self.metric}": self.best_metric,
            "best_step": self.best_step,
            "best_epoch": self.best_epoch,
            "steps": self.steps,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "history": self.history,
        }


@dataclass
class StageCheckpoint:
    """A stage's loop state and tensors, as loaded from a checkpoint."""

    state: LoopState
    net: dict[str, Any]  # as written by q2pt.weights.pack_state (see net_metadata)
    best: dict[str, Any] | None
    optimizers: list[tuple[dict[str, Any], dict[str, Any]]]  # (tensors, index) per optimiser
    rng: Any
    net_metadata: dict[str, str] = field(default_factory=dict)  # safetensors metadata of net
    best_metadata: dict[str, str] = field(default_factory=dict)
    source: str = "checkpoint"  # the checkpoint folder, for error messages


def remove_checkpoints(out_dir: str | Path) -> None:
    """Remove ``out_dir/checkpoints`` once its model is saved: the best weights of every network
    are in the model folder, and a finished run is not resumed (a full copy of the weights stayed
    beside them before: 134 MB for an ``ngram`` model)."""
    folder = Path(out_dir) / "checkpoints"
    if folder.is_dir():
        shutil.rmtree(folder)


class Checkpointer:
    """Checkpoints of a training run in ``OUT/checkpoints`` (safetensors + JSON, no pickle).

    Network weights are written by :func:`q2pt.weights.pack_state` (pretrained tables as
    row deltas, checked against the installed resource on resume).

    Layout::

        checkpoints/run.json               what the run is (config, data, labels): resume checks it
        checkpoints/done/<stage>.safetensors   best weights of each finished network
        checkpoints/done/<stage>.json          its training summary
        checkpoints/last/                  the network in progress (replaced atomically):
            state.json  net.safetensors  optim.safetensors  rng.safetensors
            best.safetensors (only when the best weights are not the current ones)
    """

    def __init__(self, folder: str | Path, run: Mapping[str, Any],
                 compare: "Callable[[Config], dict[str, Any]] | None" = None):
        """``run``: what the run is (its ``config`` as ``compare`` gives it: by default
        :func:`comparable_config`); a saved run's config is read and compared the same way."""
        self.folder = Path(folder)
        self.run = json.loads(json.dumps(run))
        self.compare = compare or comparable_config

    # -- writing
    def start(self) -> None:
        """Start a fresh run: remove old checkpoints, write run.json."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / "run.json", {"format": CHECKPOINT_FORMAT, **self.run})

    def save_progress(
        self, stage: str, net: Any, optimizers: list[Any], state: LoopState, best: Mapping[str, Any] | None
    ) -> None:
        from safetensors.torch import save_file


        with atomic_path(self.folder / "last") as tmp:
            tmp.mkdir()
            tensors, metadata = pack_state(net)
            save_file(tensors, str(tmp / "net.safetensors"), metadata=metadata)
            del tensors
            # the best weights are often the current ones (while validation improves)
            best_is_current = best is not None and state.best_step == state.step
            if best is not None and not best_is_current:
                tensors, metadata = pack_state(net, best)
                save_file(tensors, str(tmp / "best.safetensors"), metadata=metadata)
                del tensors
            opt_tensors: dict[str, Any] = {}
            indexes = []
            for i, opt in enumerate(optimizers):
                tensors, index = optimizer_to_tensors(opt, f"opt{i}")
                opt_tensors.update(tensors)
                indexes.append(index)
            save_file(opt_tensors, str(tmp / "optim.safetensors"))
            save_file({"torch": torch.get_rng_state().clone()}, str(tmp / "rng.safetensors"))
            state_json = {
                "format": CHECKPOINT_FORMAT,
                "stage": stage,
                "loop": state.to_json(),
                "has_best": best is not None,
                "best_is_current": best_is_current,
                "optimizers": indexes,
            }
            (tmp / "state.json").write_text(json.dumps(state_json, indent=1), encoding="utf-8")

    def save_done(self, stage: str, net: Any, result: StageResult) -> None:
        from safetensors.torch import save_file


        done = self.folder / "done"
        done.mkdir(parents=True, exist_ok=True)
        with atomic_path(done / f"{safe_name(stage)}.safetensors") as tmp:
            tensors, metadata = pack_state(net)
            save_file(tensors, str(tmp), metadata=metadata)
        write_json(done / f"{safe_name(stage)}.json", {"stage": stage, **result.summary()})
        last = self.folder / "last"
        if last.exists():
            shutil.rmtree(last)

    # -- reading
    def exists(self) -> bool:
        return (self.folder / "run.json").is_file()

    def has_no_progress(self) -> bool:
        """Nothing saved since :meth:`start`: no finished network, no network in progress."""
        return not (self.folder / "done").exists() and not (self.folder / "last").exists()

    def check_run(self) -> None:
        """Refuse to resume a run made with another config, data or label space."""
        path = self.folder / "run.json"
        saved = _read_json(path)
        if saved.get("format") not in READABLE_CHECKPOINT_FORMATS:
            raise ModelLoadError(f"{path}: unsupported checkpoint format {saved.get('format')!r}")
        saved = _current_config(saved, self.compare)
        for key, value in self.run.items():
            if saved.get(key) != value:
                what = key.replace("_", " ")
                if key == "config" and isinstance(saved.get(key), dict):
                    old, new = _flatten(saved[key]), _flatten(value)
                    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
                    what = f"config ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in changed[:5])})"
                raise ConfigError(
                    f"cannot resume: the checkpoint in {self.folder} was made with a different {what}; "
                    "train without --resume (or with the same settings and data)"
                )

    def done_stages(self) -> dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]]:
        """{stage: (best weights as packed tensors, their safetensors metadata, summary)} of
        the finished networks (load the weights with :func:`q2pt.weights.load_network_state`)."""

        out: dict[str, tuple[dict[str, Any], dict[str, str], dict[str, Any]]] = {}
        done = self.folder / "done"
        if not done.is_dir():
            return out
        for meta_path in sorted(done.glob("*.json")):
            meta = _read_json(meta_path)
            tensors, metadata = read_safetensors(meta_path.with_suffix(".safetensors"))
            out[meta["stage"]] = (tensors, metadata, meta)
        return out

    def load_progress(self) -> tuple[str, StageCheckpoint] | None:
        """The network in progress, or None."""

        last = self.folder / "last"
        restore_interrupted_swap(last)  # a kill between the renames of its last save
        if not (last / "state.json").is_file():
            return None
        meta = _read_json(last / "state.json")
        opt_tensors, _ = read_safetensors(last / "optim.safetensors")
        optimizers = [(opt_tensors, index) for index in meta["optimizers"]]
        net, net_metadata = read_safetensors(last / "net.safetensors")
        best, best_metadata = None, {}
        if meta.get("has_best"):
            if meta.get("best_is_current"):
                best, best_metadata = net, net_metadata
            else:
                best, best_metadata = read_safetensors(last / "best.safetensors")
        ckpt = StageCheckpoint(
            state=LoopState.from_json(meta["loop"]),
            net=net,
            best=best,
            optimizers=optimizers,
            rng=read_safetensors(last / "rng.safetensors")[0]["torch"],
            net_metadata=net_metadata,
            best_metadata=best_metadata,
            source=str(last),
        )
        return meta["stage"], ckpt


def _current_config(saved: dict[str, Any],
                    compare: "Callable[[Config], dict[str, Any]]") -> dict[str, Any]:
    """A run.json whose config is read as this q2pt reads saved configs (renamed keys; keys added
    since at the value that does what q2pt did before them, :data:`q2pt.config.ADDED_KEYS`) and
    given as the run compares its own (``compare``: settings such as ``"auto"`` resolved), so
    that a run checkpointed by an earlier version resumes with the same recipe, or is refused
    naming the key whose new default would change it."""
    from q2pt.config import Config

    cfg = saved.get("config")
    if not isinstance(cfg, dict):
        return saved
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg.items()}
    try:
        config = Config.from_saved(cfg)
    except Q2PTError:
        return saved  # not a config this q2pt reads: the comparison says what differs
    return {**saved, "config": compare(config)}


def comparable_config(config: "Config") -> dict[str, Any]:
    """A config as a training run's identity compares it: without the keys that do not change the
    trained weights (threads, checkpointing, evaluation batches, and the thresholds calibrated
    after training)."""
    cfg = config.to_dict()
    if cfg["data"].get("path"):  # a model records its data's absolute path since 2026-12-07; a run saved
        cfg["data"]["path"] = os.path.abspath(cfg["data"]["path"])  # before held it as given (relative)
    for key in ("threads", "checkpoint_every", "eval_batch_size",
                # calibrated after training, from the final weights: a resumed run uses the current rule
                "locale_threshold_min_positives", "type_thresholds", "type_threshold_min_positives"):
        cfg["train"].pop(key, None)
    return cfg


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelLoadError(f"{path} is corrupt (not valid JSON: {exc})") from None
