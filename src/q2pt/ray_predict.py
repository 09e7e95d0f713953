"""Batch prediction on Ray Data (``pip install 'q2pt[scale]'``).

::

    ray.data.read_parquet(INPUT)
      .map_batches(RayPredictor, fn_constructor_kwargs={"model_dir": MODEL, ...},
                   compute=ActorPoolStrategy(size=N), num_cpus=1, batch_format="pyarrow")
      .write_parquet(OUTPUT)

:class:`RayPredictor` is a callable class: Ray creates N actors, each loads the q2pt model
once (in ``__init__``, torch with one thread) and then predicts the batches it is sent.
The output rows are the input rows (every column) plus ``predicted_types``,
``predicted_scores``, for a hierarchical model unless ``flat`` ``predicted_levels``
(list<int32>) and ``predicted_ancestors`` (list<list<string>>), and ``note``, as in
:func:`q2pt.predict.predict_frame`. Every row is
written once, but their order is not guaranteed (see ``preserve_order``) and Ray Data does
not number rows, so keep an id column in the input to join predictions back.

:func:`ray_predict` runs that pipeline (on a running cluster, or on a local one it starts
with ``ray.init``) and writes the output folder atomically. The same pipeline scales from
one machine to a cluster: pass ``address="auto"`` (or call ``ray.init`` yourself) and give
paths every node can read (e.g. ``s3://...``; local paths only work on one machine).
Ray itself moves the class and the batches between processes with its own serialisation;
q2pt stores nothing with pickle.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS, row_problems
from q2pt.errors import ConfigError, DataError, Q2PTError, require
from q2pt.inference import DEFAULT_BATCH_SIZE, check_flat_model_options, check_threshold, check_top_k
from q2pt.predict import PREDICTION_COLUMNS, arrow_fields, predict_rows

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

logger = logging.getLogger(__name__)

__all__ = ["RayPredictor", "ray_predict"]


class RayPredictor:
    """``map_batches`` callable class: one q2pt model per Ray actor.

    Args:
        model_dir: the model folder (readable by every actor).
        threshold, top_k, fallback_locale, batch_size, max_depth, backoff, flat: as in
            :func:`q2pt.predict.predict_rows`.
        threads: torch intra-op threads of the actor (1: one actor per CPU).
    """

    def __init__(
        self,
        model_dir: str,
        *,
        threshold: float | None = None,
        top_k: int | None = None,
        fallback_locale: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 1,
        max_query_chars: int = DEFAULT_MAX_QUERY_CHARS,
        max_depth: int | None = None,
        backoff: bool = True,
        flat: bool = False,
    ) -> None:
        torch = require("torch", "torch")
        from q2pt.models import load_model

        torch.set_num_threads(threads)
        self.model = load_model(model_dir)
        self.options: dict[str, Any] = {"threshold": threshold, "top_k": top_k, "fallback_locale": fallback_locale,
                        "batch_size": batch_size, "max_depth": max_depth, "backoff": backoff, "flat": flat}
        self.max_query_chars = max_query_chars

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        names = batch.column_names
        missing = [c for c in ("query", "locale") if c not in names]
        if missing:
            raise DataError(f"input: missing column(s) {', '.join(missing)} (need query and locale)")
        queries = batch.column("query").to_pylist()
        locales = batch.column("locale").to_pylist()
        problems = row_problems(queries, locales, "input", first_row=None,  # Ray does not number rows
                                max_query_chars=self.max_query_chars)
        if problems:
            raise DataError(f"input: {len(problems)} value(s) cannot be predicted", problems)
        preds = predict_rows(self.model, queries, locales, **self.options)
        # the input's own prediction columns are replaced (path columns too: a flat answer has none)
        table = batch.select([c for c in names if c not in PREDICTION_COLUMNS])
        for field, array in zip(arrow_fields(preds.paths), preds.arrow_arrays()):
            table = table.append_column(field, array)
        return table


_REMOTE_ERROR = re.compile(r"^q2pt\.errors\.(\w+): (.*?)(?:\n\n|\Z)", re.MULTILINE | re.DOTALL)


def _q2pt_cause(exc: BaseException) -> Q2PTError | None:
    """The q2pt error behind a Ray task error, if that is what failed: the exception
    itself when Ray kept it, else rebuilt from the remote traceback Ray reports (Ray Data
    wraps errors raised in actors in a UserCodeException that keeps only their text)."""
    import q2pt.errors as errors

    seen = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Q2PTError):
            return e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    match = _REMOTE_ERROR.search(str(exc))
    if match is not None:
        cls = getattr(errors, match.group(1), None)
        if isinstance(cls, type) and issubclass(cls, Q2PTError):
            return cls(match.group(2).rstrip())
    return None


def ray_predict(
    model_dir: str | Path,
    input_path: str,
    output: str | Path,
    *,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    rows_per_batch: int = 4096,
    block_bytes: int | None = 16 << 20,
    threshold: float | None = None,
    top_k: int | None = None,
    fallback_locale: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    preserve_order: bool = True,
    address: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
    max_depth: int | None = None,
    backoff: bool = True,
    flat: bool = False,
) -> int:
    """Predict a Parquet file (or folder) with Ray Data; returns the number of rows written.

    Args:
        model_dir: the q2pt model folder.
        input_path: Parquet file(s) with ``query`` and ``locale`` columns (any path
            ``ray.data.read_parquet`` takes).
        output: the output folder (Parquet files written by ``write_parquet``); replaced
            only with ``overwrite``. It appears complete or not at all.
        actors: model copies (Ray actors); default: the cluster's CPUs less one (Ray Data's
            read and write tasks need a CPU too: actors holding every CPU would starve them).
        cpus_per_actor: the CPUs Ray reserves for each actor (each runs one torch thread);
            below 1 packs more actors than CPUs, e.g. on a 2-CPU machine.
        rows_per_batch: rows per ``map_batches`` call.
        block_bytes: Ray Data's ``target_max_block_size`` for this run (None: Ray's
            default, 128 MiB). Each block is predicted by one actor, so blocks must be
            smaller than the input divided by the actors for all of them to work: Ray reads
            a Parquet file into blocks of this size whatever its row groups (measured with
            Ray 2.60: ``override_num_blocks`` did not split one file). 16 MiB is roughly
            500k short queries.
        threshold, top_k, fallback_locale, batch_size, max_depth, backoff, flat: as in
            :func:`q2pt.predict.predict_rows`.
        preserve_order: Ray Data's ``preserve_order`` option. Best effort only: with it,
            Ray 2.60 still sometimes wrote two pieces of one block in swapped order (small
            blocks and batches, several actors), so join on an id column, not on position.
        address: a Ray cluster to connect to; None: the running one, or a new local one.
        init_kwargs: more ``ray.init`` options when this starts Ray (e.g. ``num_cpus``).
    """
    ray = require("ray", "scale")
    require("ray.data", "scale")
    import pyarrow.parquet as pq

    from q2pt.io import atomic_path

    check_threshold(threshold)
    check_top_k(top_k)
    if rows_per_batch < 1 or batch_size < 1 or (block_bytes is not None and block_bytes < 1):
        raise ConfigError("rows_per_batch, block_bytes and batch_size must be positive")
    if actors is not None and actors < 1:
        raise ConfigError(f"actors must be at least 1, got {actors}")
    if not cpus_per_actor > 0:
        raise ConfigError(f"cpus_per_actor must be positive, got {cpus_per_actor}")
    model_dir = Path(model_dir).resolve()
    from q2pt.models import load_model

    model = load_model(model_dir)  # fail here, cleanly, rather than in every actor
    check_flat_model_options(model.tree_ is not None, max_depth, backoff, flat)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise ConfigError(f"{output} exists and is not empty; pass overwrite to replace it")
        if any(p.is_dir() or p.suffix != ".parquet" for p in output.iterdir()):
            raise ConfigError(f"refusing to replace {output}: it holds files that are not Parquet output")
    local_input = "://" not in str(input_path)
    if local_input and not Path(input_path).exists():
        raise DataError(f"{input_path}: file not found")

    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.target_max_block_size)
    ctx.execution_options.preserve_order = preserve_order
    if block_bytes is not None:
        ctx.target_max_block_size = int(block_bytes)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor) - 1)
    try:
        ds = ray.data.read_parquet(str(Path(input_path).resolve()) if local_input else input_path)
        ds = ds.map_batches(
            RayPredictor,
            fn_constructor_kwargs={"model_dir": str(model_dir), "threshold": threshold, "top_k": top_k,
                                   "fallback_locale": fallback_locale, "batch_size": batch_size,
                                   "max_depth": max_depth, "backoff": backoff, "flat": flat},
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor,
            batch_size=rows_per_batch,
            batch_format="pyarrow",
        )
        with atomic_path(output) as tmp:
            ds.write_parquet(str(tmp.resolve()))
            if not tmp.exists():  # an empty input writes nothing
                tmp.mkdir()
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in tmp.glob("*.parquet"))
    except Exception as exc:
        cause = _q2pt_cause(exc)
        if cause is not None:
            raise cause from None
        raise
    finally:
        ctx.execution_options.preserve_order, ctx.target_max_block_size = saved
    return rows
