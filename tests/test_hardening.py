"""What an unlucky or hostile user could break (issue 13): two writers of one model folder,
tracebacks instead of messages, manifests that lie, debris of killed writers. Each case is
the bad input with the exit code and message it must get."""

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import need

need("torch")

from q2pt.cli import main  # noqa: E402
from q2pt.errors import ConfigError, ModelLoadError  # noqa: E402
from q2pt.io import atomic_path, folder_lock, remove_stale_temporaries  # noqa: E402
from q2pt.models import load_model  # noqa: E402

FAST = ["--encoder", "ngram", "--data.preset", "tiny", "--train.max_epochs", "1", "--train.threads", "1",
        "--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "256", "--no-progress", "-q"]


def _hold_lock(folder: str, ready, release) -> None:
    with folder_lock(folder, "model folder"):
        ready.set()
        release.wait(30)


@contextlib.contextmanager
def _held_by_another_process(folder: Path):
    """Another process holding ``folder``'s write lock for the block; yields that process."""
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(folder), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        yield holder
    finally:
        release.set()
        holder.join(30)


def test_a_second_writer_of_a_folder_is_refused_naming_the_holder(tmp_path):
    with _held_by_another_process(tmp_path / "m") as holder:
        with pytest.raises(ConfigError, match=rf"m is being written by another q2pt process \(pid {holder.pid}\)"):
            with folder_lock(tmp_path / "m"):
                pass
    with folder_lock(tmp_path / "m"), folder_lock(tmp_path / "m"):  # free again; re-entrant in one process
        pass


def test_train_into_a_folder_another_process_writes_names_that_process(tmp_path, capsys):
    """Not "an interrupted run: pass --resume", which would then be refused for the lock."""
    with _held_by_another_process(tmp_path / "m") as holder:
        (tmp_path / "m" / "checkpoints").mkdir(parents=True)
        (tmp_path / "m" / "checkpoints" / "run.json").write_text("{}")
        assert main(["train", "--out", str(tmp_path / "m"), *FAST]) == 2
        assert f"is being written by another q2pt process (pid {holder.pid})" in capsys.readouterr().err


def test_a_second_experiment_into_one_folder_is_refused(tmp_path, capsys):
    """Two at once each rewrote results.json: one's runs vanished from it."""
    with _held_by_another_process(tmp_path / "e") as holder:
        assert main(["experiment", "--out", str(tmp_path / "e"), "--preset", "tiny", "--encoder", "ngram",
                     "--no-progress", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"the experiment folder {tmp_path / 'e'} is being written by another q2pt process (pid {holder.pid})" \
            in err
        assert not (tmp_path / "e").exists()


def test_train_into_an_existing_model_needs_overwrite(tmp_path, capsys, monkeypatch):
    import q2pt.training.checkpoints as checkpoints

    out = tmp_path / "m"
    assert main(["train", "--out", str(out), *FAST]) == 0
    assert not (out / "checkpoints").exists()  # a finished run leaves the model, not a copy of it
    capsys.readouterr()
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert "holds a model already: pass --overwrite" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", *FAST]) == 2
    assert "holds a finished model: there is no run to resume" in capsys.readouterr().err
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "run.json").write_text("{}")  # a retrain over the model, killed
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert "holds a model and an interrupted training run over it: pass --resume" in capsys.readouterr().err
    shutil.rmtree(out / "checkpoints")
    # a model folder an earlier q2pt finished kept its checkpoints: --resume reads them
    monkeypatch.setattr(checkpoints, "remove_checkpoints", lambda out_dir: None)
    assert main(["train", "--out", str(out), "--overwrite", *FAST]) == 0
    assert main(["train", "--out", str(out), "--resume", *FAST]) == 0
    # an interrupted run (its checkpoints, no model yet): a plain rerun would throw them away
    for p in out.iterdir():
        if p.name != "checkpoints":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(out), *FAST]) == 2
    assert "holds an interrupted training run: pass --resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "run.json").is_file()
    assert main(["train", "--out", str(out), "--resume", *FAST]) == 0 and (out / "manifest.json").is_file()
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume", *FAST]) == 0  # (that run's checkpoints read)
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("argv, message", [
    (["data", "simulate", "--preset", "tiny", "--out", "/proc/q2pt/x"], "cannot write the dataset folder /proc/q2pt/x"),
    (["train", "--out", "/proc/q2pt/x", *FAST], "cannot write the model folder /proc/q2pt/x"),
    (["data", "simulate", "--preset", "tiny", "--seed", "-1", "--out", "SIM"], "seed (--seed) must be a whole number"),
    (["train", "--out", "OUT", "--train.seed", "-1", *FAST], "train.seed"),
])
def test_bad_outputs_and_seeds_are_one_line_with_exit_code_2(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / a) if a in ("SIM", "OUT") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("q2pt: ") and "Traceback" not in err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard") / "m"
    assert main(["train", "--out", str(out), "--variant", "non-unified", *FAST]) == 0
    return out


def _tampered(model_dir: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _outside(m, copy):
    m["networks"][next(iter(m["networks"]))]["weights"] = "../other/model.safetensors"


def _duplicate_label(m, copy):
    m["labels"] = m["labels"] + m["labels"][:1]


@pytest.mark.parametrize("edit, message", [
    (lambda m, c: m["thresholds"].update({"global": "abc"}), "thresholds.global"),
    (lambda m, c: m.update({"networks": None}), "networks"),
    (lambda m, c: m.update({"locales": 5}), "locales"),
    (lambda m, c: m["thresholds"].update({"zz": 0.5}), "thresholds: for locales the model does not have"),
    (_duplicate_label, "labels: duplicate entries"),
    (_outside, "weights and assets must be"),
    (lambda m, c: m["files"].update({"../../etc/passwd": "0" * 64}), "outside the model folder"),
    (lambda m, c: m["files"].pop(m["networks"]["us"]["weights"]), "model.safetensors is not listed"),
])
def test_a_manifest_that_lies_is_refused_naming_the_field(model_dir, tmp_path, capsys, edit, message):
    copy = _tampered(model_dir, tmp_path, edit)
    with pytest.raises(ModelLoadError, match="corrupt|not listed") as info:
        load_model(copy)
    assert message in str(info.value)
    assert main(["predict", "--model", str(copy), "--locale", "us", "shoes"]) == 3  # one line, exit code 3
    err = capsys.readouterr().err
    assert err.startswith("q2pt: ") and err.count("\n") == 1


def test_serve_refuses_a_lying_manifest_without_a_traceback(model_dir, tmp_path):
    copy = _tampered(model_dir, tmp_path, lambda m, c: m.update({"networks": None}))
    proc = subprocess.run([sys.executable, "-m", "q2pt", "serve", "--model", str(copy), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "networks" in proc.stderr


def test_the_next_writer_removes_what_a_killed_writer_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    target = tmp_path / "m"
    debris = [tmp_path / f".m.{pid}.abcd.tmp", target / "checkpoints" / f".last.{pid}.efgh.tmp", tmp_path / f".m.old-{pid}"]
    for d in debris:
        d.mkdir(parents=True)
        (d / "big.bin").write_bytes(b"x" * 1000)
    alive = tmp_path / f".m.{os.getpid()}.live.tmp"  # a live writer's temporary stays
    alive.mkdir()
    with atomic_path(target / "checkpoints" / "last") as tmp:
        tmp.mkdir()
    assert not debris[1].exists()
    assert remove_stale_temporaries(target) == 2
    assert not debris[0].exists() and not debris[2].exists() and alive.exists()


def test_a_dataset_spelling_a_store_two_ways_is_refused(tmp_path, capsys):
    import pandas as pd

    from q2pt.data.io import write_table

    frame = pd.DataFrame({"query": ["a", "b", "c", "d"], "locale": ["us", "US", "us", "de"],
                          "product_types": [["x"]] * 4, "split": ["train", "train", "valid", "test"]})
    write_table(frame, tmp_path / "d.jsonl")
    assert main(["data", "validate", str(tmp_path / "d.jsonl")]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "US (1 row), us (2 rows) differ only in case" in text
    assert "d.jsonl, row 2, field 'locale'" in text and "'US' first at this row" in text  # the odd one out


def test_prediction_input_is_checked_like_training_input(model_dir, tmp_path, capsys):
    """Invalid UTF-8, an empty query and an over-long one are refused naming their rows (not
    predicted, not silently changed); a field a JSONL row lacks stays missing in the output."""
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"query": "shoes", "locale": "us"}\n{"query": "caf\xe9", "locale": "us"}\n'
                    b'{"query": "  ", "locale": "us"}\n' + b'{"query": "' + b"x" * 300 + b'", "locale": "us"}\n')
    assert main(["predict", "--model", str(model_dir), "--input", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    for row, what in ((2, "not valid UTF-8"), (3, "empty"), (4, "over the limit of 200")):
        assert f"row {row}" in err and what in err
    assert not (tmp_path / "o.jsonl").exists()
    good = tmp_path / "good.jsonl"
    good.write_text('{"query": "shoes", "locale": "us", "weight": 2}\n{"query": "boots", "locale": "US"}\n')
    assert main(["predict", "--model", str(model_dir), "--input", str(good), "--out", str(tmp_path / "o.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows[0]["weight"] == 2 and rows[1]["weight"] is None
    assert rows[1]["note"] == ""  # "US" is the model's "us"


def test_cleanup_matches_its_own_temporaries_and_restores_an_interrupted_replace(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    live_sibling = tmp_path / f".m.{dead}.{os.getpid()}.abcd.tmp"  # a live temporary of the folder "m.<dead>"
    live_sibling.mkdir()
    previous = tmp_path / f".m.old-{dead}"  # the writer died between its two renames: m is gone
    previous.mkdir()
    (previous / "manifest.json").write_text("{}")
    remove_stale_temporaries(tmp_path / "m")
    assert live_sibling.exists()
    assert (tmp_path / "m" / "manifest.json").is_file() and not previous.exists()


def test_a_model_a_killed_save_moved_aside_is_named_by_readers_and_put_back_before_training(
        model_dir, tmp_path, capsys):
    """A save killed between its two renames leaves the folder missing and its previous model as
    .NAME.old-PID: predict names that copy; train (no --overwrite) puts it back first and then
    refuses to replace it, where it used to train into the missing folder and delete the copy."""
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    target, aside = tmp_path / "m", tmp_path / f".m.old-{dead}"
    shutil.copytree(model_dir, aside)
    assert main(["predict", "--model", str(target), "--locale", "us", "shoes"]) == 3
    assert f"a save into it was killed, and its previous model is in {aside}" in capsys.readouterr().err
    assert not target.exists()  # a reader does not move it
    assert main(["train", "--out", str(target), *FAST]) == 2
    err = capsys.readouterr().err
    assert "its previous content (.m.old-" in err and "holds a model already: pass --overwrite" in err
    assert not aside.exists() and load_model(target).variant == "non-unified"


def test_a_model_folder_with_symlinked_files_loads(model_dir, tmp_path):
    """e.g. a folder downloaded into a cache whose files are links to blobs."""
    blobs, copy = tmp_path / "blobs", tmp_path / "snap"
    shutil.copytree(model_dir, copy)
    blobs.mkdir()
    for f in sorted(copy.rglob("*.safetensors")):
        blob = blobs / f"{len(list(blobs.iterdir()))}.bin"
        shutil.move(f, blob)
        f.symlink_to(blob)
    assert load_model(copy).variant == "non-unified"


def test_prediction_query_limit_is_the_training_one_and_can_be_raised(model_dir, tmp_path, capsys):
    from q2pt.cli import train as cli_train
    from q2pt.data.schema import DEFAULT_MAX_QUERY_CHARS

    assert cli_train.DEFAULT_MAX_QUERY_CHARS == DEFAULT_MAX_QUERY_CHARS
    long_query = "shoes " * 50  # 300 characters
    assert main(["predict", "--model", str(model_dir), "--locale", "us", long_query]) == 2
    assert "over the limit of 200" in capsys.readouterr().err
    assert main(["predict", "--model", str(model_dir), "--locale", "us", "--max-query-chars", "400", long_query]) == 0


def test_a_run_checkpointed_before_the_new_config_keys_resumes(tmp_path, capsys, monkeypatch):
    import q2pt.training.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "remove_checkpoints", lambda out_dir: None)  # as an earlier q2pt left them
    out = tmp_path / "m"
    argv = ["train", "--out", str(out), *FAST, "--train.max_epochs", "2", "--train.checkpoint_every", "1"]
    assert main(argv) == 0
    run = json.loads((out / "checkpoints" / "run.json").read_text())
    for key in ("probe_steps", "warmup_steps", "lr_decay"):  # written by an earlier q2pt: no such keys
        del run["config"]["train"][key]
    del run["config"]["data"]["locale_languages"]
    (out / "checkpoints" / "run.json").write_text(json.dumps(run))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err


def test_a_run_checkpointed_with_a_relative_data_path_resumes(tmp_path, capsys, monkeypatch):
    """Runs saved before 2026-12-07 hold --data as given ("d"); models now record the absolute
    path: the resume compares the two as one folder."""
    import q2pt.training.checkpoints as checkpoints

    monkeypatch.chdir(tmp_path)
    assert main(["data", "simulate", "--preset", "tiny", "--out", "d", "-q"]) == 0
    monkeypatch.setattr(checkpoints, "remove_checkpoints", lambda out_dir: None)  # as an interrupted run left them
    fast = [a for a in FAST if a not in ("--data.preset", "tiny")]
    argv = ["train", "--out", "m", "--data", "d", *fast, "--train.max_epochs", "2", "--train.checkpoint_every", "1"]
    assert main(argv) == 0
    run = json.loads((tmp_path / "m" / "checkpoints" / "run.json").read_text())
    assert Path(run["config"]["data"]["path"]).is_absolute()
    run["config"]["data"]["path"] = "d"
    (tmp_path / "m" / "checkpoints" / "run.json").write_text(json.dumps(run))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err


def test_loaded_weights_survive_their_file_being_overwritten_in_place(model_dir, tmp_path):
    """A served model's weights file overwritten in place (``cp`` truncates and rewrites it) must
    not crash the process that loaded it: the tensors are copies, not views of the mapped file.
    In a child process, so that a regression (SIGBUS) fails this test instead of killing pytest."""
    folder = tmp_path / "served"
    shutil.copytree(model_dir, folder)
    code = (
        "import sys; from pathlib import Path; from q2pt.models import load_model\n"
        "folder = Path(sys.argv[1]); model = load_model(folder)\n"
        "before = model.predict_proba(['red shoes'], ['us'])\n"
        "files = list(folder.rglob('*.safetensors')); assert files\n"
        "for f in files:\n"
        "    f.write_bytes(b'')  # truncated in place, as cp does before it writes\n"
        "after = model.predict_proba(['red shoes'], ['us'])\n"
        "assert (before == after).all()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def _one_label_less(m, copy):
    m["labels"] = m["labels"][:-1]
    for entry in m["networks"].values():
        if entry.get("labels"):
            entry["labels"] = entry["labels"][:-1]


def test_refusals_say_what_the_folder_is(model_dir, tmp_path):
    """A manifest listing fewer types than the weights' rows said "query memory labels out of
    range"; a checkpoint-only folder and an experiment's folder were "not a q2pt model folder"."""
    copy = _tampered(model_dir, tmp_path, _one_label_less)
    with pytest.raises(ModelLoadError, match=r"its output layer has \d+ rows where the manifest lists \d+ product"):
        load_model(copy)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "run.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"holds an interrupted training run, not a model yet \(`q2pt train "
                                             r"--resume --out"):
        load_model(run)
    exp = tmp_path / "exp"
    shutil.copytree(model_dir, exp / "models" / "main--unified-aware")
    (exp / "results.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"is an experiment's folder; its models are in .*models "
                                             r"\(main--unified-aware\)"):
        load_model(exp)


def test_an_interrupted_experiment_says_how_to_continue(tmp_path, capsys, monkeypatch):
    import q2pt.experiments

    def stopped(req):
        raise KeyboardInterrupt

    monkeypatch.setattr(q2pt.experiments, "run_experiment", stopped)
    assert main(["experiment", "--out", str(tmp_path / "e"), "--encoder", "ngram", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "the experiment stopped: the same command continues it" in err and err.rstrip().endswith("interrupted")


def test_a_run_refused_before_it_learnt_anything_leaves_no_checkpoints(tmp_path, capsys):
    """A config error found building the encoder left OUT/checkpoints, and the corrected rerun was
    told to --resume (refused: another config) or --overwrite."""
    out = tmp_path / "m"
    assert main(["train", "--out", str(out), *FAST, "--model.encoder_options.dim", "-3"]) == 2
    assert "dim must be an integer >= 1, got -3" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--out", str(out), *FAST]) == 0


def test_a_config_error_under_torchrun_is_said_by_rank_0_alone(tmp_path, capsys, monkeypatch):
    """Every worker of `train --nproc 2` printed the same refusal."""
    argv = ["train", "--out", str(tmp_path / "m"), *FAST, "--train.lr", "-1"]
    for rank, said in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(argv) == 2
        assert ("train.lr" in capsys.readouterr().err) is said
