"""Batch prediction on Ray Data (q2pt.ray_predict), on a local 2-CPU Ray instance.

Skipped when ray is not installed (``pip install 'q2pt[scale]'``). Starting Ray takes
several seconds; the whole module takes ~20-30 s on a 2-core machine.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from support import need

need("torch")
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.integration]  # Ray's deprecations
need("ray", reason="ray is not installed (pip install 'q2pt[scale]')")
need("ray.data", reason="ray[data] is not installed (pip install 'q2pt[scale]')")
pa = need("pyarrow")
pq = need("pyarrow.parquet")

from q2pt.errors import ConfigError, DataError  # noqa: E402
from support import STREAM_ADJ as ADJ  # noqa: E402
from support import STREAM_TYPES as TYPES  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(stream_model_dir):
    """The streaming tests' model (a session fixture, trained once)."""
    return stream_model_dir


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def write_input(path, n: int, seed: int = 0) -> pd.DataFrame:
    r = random.Random(seed)
    words = [w for ws in TYPES.values() for w in ws] + ADJ
    frame = pd.DataFrame({
        "id": [f"q{i:05d}" for i in range(n)],
        "query": [" ".join(r.choice(words) for _ in range(r.randint(1, 3))) for _ in range(n)],
        "locale": [r.choice(["de", "us", "jp"]) for _ in range(n)],
    })
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return frame


@pytest.mark.filterwarnings("error:The minimum number of concurrent actors")  # both actors get blocks
def test_ray_data_predicts_every_row_once_like_predict_frame(tmp_path, model_dir, local_ray):
    from q2pt.models import load_model
    from q2pt.predict import predict_frame
    from q2pt.ray_predict import ray_predict

    src = tmp_path / "in.parquet"
    frame = write_input(src, 600)
    out = tmp_path / "out"
    # 4 KiB blocks: the small file is read as several blocks, shared by the 2 actors
    rows = ray_predict(model_dir, str(src), out, actors=2, cpus_per_actor=0.5, rows_per_batch=100, block_bytes=4096)
    assert rows == 600
    # every row exactly once; Ray does not guarantee the order (docs/scale.md), so compare by id
    got = pq.read_table(out).to_pandas()
    assert sorted(got["id"]) == frame["id"].tolist()
    got = got.set_index("id").loc[frame["id"]].reset_index()
    assert got["query"].tolist() == frame["query"].tolist() and got["locale"].tolist() == frame["locale"].tolist()
    expected = predict_frame(load_model(model_dir), frame)
    assert [list(x) for x in got["predicted_types"]] == [list(x) for x in expected["predicted_types"]]
    assert np.allclose(np.concatenate(got["predicted_scores"].tolist()),
                       np.concatenate(expected["predicted_scores"].tolist()), atol=1e-6)
    assert got["note"].tolist() == expected["note"].tolist()

    with pytest.raises(ConfigError, match="not empty"):  # no silent append to an old output
        ray_predict(model_dir, str(src), out, actors=1, cpus_per_actor=0.5)


def test_ray_errors_are_q2pt_errors(tmp_path, model_dir, local_ray):
    from q2pt.ray_predict import RayPredictor, ray_predict

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "query": ["red shoe", None], "locale": ["de", "de"]}), bad)
    with pytest.raises(DataError, match="cannot be predicted"):  # raised in an actor, re-raised here
        ray_predict(model_dir, str(bad), tmp_path / "o1", actors=1, cpus_per_actor=0.5)
    assert not (tmp_path / "o1").exists()
    with pytest.raises(DataError, match="not found"):
        ray_predict(model_dir, str(tmp_path / "missing.parquet"), tmp_path / "o2")
    # the callable class itself, as each actor runs it
    table = RayPredictor(str(model_dir))(pa.table({"id": ["x"], "query": ["tv"], "locale": ["us"]}))
    assert table.column_names == ["id", "query", "locale", "predicted_types", "predicted_scores", "note"]
