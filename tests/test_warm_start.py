"""Warm start (``q2pt train --init-from``): which weights carry over, renamed, merged, new and
removed product types, new locales, refusals, and the parent recorded in the model folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support import need

need("torch")

import torch  # noqa: E402

from q2pt.config import resolve_config  # noqa: E402
from q2pt.errors import ConfigError, DataError  # noqa: E402
from q2pt.network import build_network  # noqa: E402
from q2pt.training.warm import read_label_map, warm_start_network  # noqa: E402

NGRAM = {"model.encoder_options": {"dim": 8, "buckets": 64}}


def _net(classes, locales, seed):
    torch.manual_seed(seed)
    cfg = resolve_config(encoder="ngram", overrides=NGRAM)
    return build_network(cfg, classes, locales)


def test_rows_follow_types_and_locales():
    parent = _net(["a", "b", "c"], ["x", "y"], seed=1)
    child = _net(["a", "c2", "d"], ["y", "z"], seed=2)
    fresh_d = child.head[-1].weight[2].clone()
    fresh_z = child.encoder.bag.weight[64 + 1].clone()
    counts = warm_start_network(child, parent, ["a", "c2", "d"], ["a", "b", "c"], {"c": "c2"})
    assert counts == {"types_kept": 1, "types_mapped": 1, "types_new": 1, "types_dropped": 1,
                      "locales_kept": 1, "locales_new": 1}
    pw, pb, cw, cb = parent.head[-1].weight, parent.head[-1].bias, child.head[-1].weight, child.head[-1].bias
    assert torch.equal(cw[0], pw[0]) and cb[0] == pb[0]  # a kept
    assert torch.equal(cw[1], pw[2]) and cb[1] == pb[2]  # c renamed c2
    assert torch.equal(cw[2], fresh_d)  # d new: its fresh initialisation
    bag_p, bag_c = parent.encoder.bag.weight, child.encoder.bag.weight
    assert torch.equal(bag_c[:64], bag_p[:64])  # the n-gram table
    assert torch.equal(bag_c[64], bag_p[64 + 1])  # locale y: the parent's y row (was its 2nd locale)
    assert torch.equal(bag_c[65], fresh_z)  # locale z: new


def test_a_merge_starts_at_the_mean_of_the_merged_types():
    parent = _net(["a", "b", "c"], None, seed=1)
    child = _net(["c", "m"], None, seed=2)
    counts = warm_start_network(child, parent, ["c", "m"], ["a", "b", "c"], {"a": "m", "b": "m"})
    assert counts["types_mapped"] == 1 and counts["types_kept"] == 1 and counts["types_dropped"] == 0
    pw = parent.head[-1].weight
    assert torch.allclose(child.head[-1].weight[1], (pw[0] + pw[1]) / 2)
    assert torch.allclose(child.head[-1].bias[1], parent.head[-1].bias[:2].mean())


def test_label_map_files(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"old": "new"}))
    assert read_label_map(tmp_path / "m.json") == {"old": "new"}
    (tmp_path / "m.csv").write_text("old,new\nphone cover,phone case\n\nsneaker,shoes\n")
    assert read_label_map(tmp_path / "m.csv") == {"phone cover": "phone case", "sneaker": "shoes"}
    (tmp_path / "bad.tsv").write_text("a\tb\nc\n")
    with pytest.raises(DataError) as err:
        read_label_map(tmp_path / "bad.tsv")
    assert "row 2" in str(err.value.problems[0])
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(DataError, match="JSON object"):
        read_label_map(tmp_path / "bad.json")


def test_a_parent_of_another_variant_or_encoder_is_refused(aware_dir):
    from q2pt.models import Q2PTModel

    flags = {"model.encoder_options": {"dim": 16, "buckets": 4096}}
    with pytest.raises(ConfigError, match="model.variant is 'unified-aware'"):
        Q2PTModel(config=resolve_config(encoder="ngram", flags={**flags, "model.variant": "non-unified"})
                  ).warm_start_from(aware_dir)
    with pytest.raises(ConfigError, match="model.encoder_options"):
        Q2PTModel(config=resolve_config(encoder="ngram")).warm_start_from(aware_dir)
    with pytest.raises(ConfigError, match="model.encoder is 'ngram'"):
        Q2PTModel(config=resolve_config(encoder="use")).warm_start_from(aware_dir)


def _without_type(dataset, label):
    from q2pt.data import from_frames

    keep = {name: frame[frame["product_types"].map(lambda ts: label not in set(ts))]
            for name, frame in (("train", dataset.train), ("valid", dataset.valid), ("test", dataset.test))}
    return from_frames(keep, validate=False)


def test_train_cli_warm_start_records_the_parent(tmp_path, capsys):
    from q2pt.cli import main
    from q2pt.models import load_model
    from support import handmade_dataset

    full = handmade_dataset()
    data = tmp_path / "data.jsonl"
    frames = []
    for name in ("train", "valid", "test"):
        f = getattr(full, name).copy()
        f["split"] = name
        f["product_types"] = f["product_types"].map(list)
        frames.append(f[["query", "locale", "product_types", "split"]])
    import pandas as pd

    pd.concat(frames).to_json(data, orient="records", lines=True, force_ascii=False)
    flags = ["--encoder", "ngram", "--train.max_epochs", "8", "--train.batch_size", "32", "--train.lr", "0.05",
             "--train.threads", "1", "--model.encoder_options", '{"dim": 16, "buckets": 4096}', "--no-progress", "-q"]
    # the parent never saw "gift card", and knew "headphones" as "earphones"
    parent_frames = pd.concat(frames)
    parent_frames = parent_frames[parent_frames["product_types"].map(lambda ts: "gift card" not in ts)].copy()
    parent_frames["product_types"] = parent_frames["product_types"].map(
        lambda ts: ["earphones" if t == "headphones" else t for t in ts])
    parent_data = tmp_path / "parent.jsonl"
    parent_frames.to_json(parent_data, orient="records", lines=True, force_ascii=False)
    assert main(["train", "--data", str(parent_data), "--out", str(tmp_path / "parent"), *flags]) == 0
    (tmp_path / "map.csv").write_text("old,new\nearphones,headphones\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "child"), "--init-from",
                 str(tmp_path / "parent"), "--label-map", str(tmp_path / "map.csv"), *flags]) == 0
    capsys.readouterr()
    parent, child = load_model(tmp_path / "parent"), load_model(tmp_path / "child")
    entry = child.manifest["parent"]
    assert entry["fingerprint"] == parent.fingerprint and entry["label_map"] == {"earphones": "headphones"}
    assert entry["networks"]["*"] == {"types_kept": 3, "types_mapped": 1, "types_new": 1, "types_dropped": 0,
                                      "locales_kept": 3, "locales_new": 0}
    card = (tmp_path / "child" / "MODEL_CARD.md").read_text()
    assert f"fingerprint `{parent.fingerprint}`" in card and "warm-started" in card
    assert "up to 2 (a warm start" in card and "`earphones` → `headphones`" in card  # train.warm_start_epochs
    assert "3 product types kept, 1 renamed or merged, 1 new, 0 dropped" in card
    # compare judges the parent under the child's names: its "earphones" answer "headphones" rows
    from q2pt.comparison import compare_models, renamed_columns, renames_from_parent
    from q2pt.data import load_labelled

    assert renames_from_parent(parent, child) == {"earphones": "headphones"} and renames_from_parent(child, parent) == {}
    rows, _ = load_labelled(str(data), split="test")
    fair = compare_models(parent, child, rows, bootstrap=0, renames_a=renames_from_parent(parent, child))
    blind = compare_models(parent, child, rows, bootstrap=0)
    assert fair["global"]["a"] > blind["global"]["a"], (fair["global"], blind["global"])
    assert main(["compare", str(tmp_path / "parent"), str(tmp_path / "child"), "--data", str(data), "--json",
                 "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["models"]["a"]["renamed_as_b"] == {"earphones": "headphones"}
    assert out["data"]["pairs_with_renamed_names"] == 0 and not any("renamed" in n for n in out["notes"])
    # rows still labelled with A's old names: said (A's right answers would count as misses)
    assert main(["compare", str(tmp_path / "parent"), str(tmp_path / "child"), "--data", str(parent_data), "--json",
                 "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    n_old = sum(ts.count("earphones") for ts in parent_frames[parent_frames["split"] == "test"]["product_types"])
    assert out["data"]["pairs_with_renamed_names"] == n_old > 0
    assert any("use names that the label map renamed ('earphones')" in n for n in out["notes"]), out["notes"]
    names, merged = renamed_columns(["a", "b", "c"], np.array([[0.2, 0.7, 0.1]]), {"a": "x", "b": "x"})
    assert names == ["x", "c"] and merged.tolist() == [[0.7, 0.1]]  # a merge answers with its best old type
    # --init-from alone trains with the parent's settings (its encoder, options, rates); a label
    # map's unknown old name is said; paths cut another way are refused before training
    (tmp_path / "typo.csv").write_text("old,new\nearphonez,headphones\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "grandchild"), "--init-from",
                 str(tmp_path / "child"), "--label-map", str(tmp_path / "typo.csv"), "--no-progress"]) == 0
    assert "1 of its 1 old names are not product types of the parent" in capsys.readouterr().err
    grandchild = load_model(tmp_path / "grandchild")
    assert grandchild.manifest["parent"]["label_map"] == {}  # as applied; the typo apart, and in the card
    assert grandchild.manifest["parent"]["label_map_unknown"] == ["earphonez"]
    card = (tmp_path / "grandchild" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Not applied (not product types of the parent): `earphonez`" in card and "Label map from" not in card
    # a typo on the new side: nothing carried over to it, said, and not recorded as applied
    (tmp_path / "typo_new.csv").write_text("old,new\nheadphones,headphonez\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "typo_new"), "--init-from",
                 str(tmp_path / "child"), "--label-map", str(tmp_path / "typo_new.csv"), *flags]) == 0
    err = capsys.readouterr().err
    assert "1 new name(s) are not product types of the training data" in err and "'headphonez'" in err
    typo_new = load_model(tmp_path / "typo_new").manifest["parent"]
    assert typo_new["label_map"] == {} and typo_new["label_map_unknown_new"] == ["headphonez"]
    # a type gone and one new, unlike in name (a rename the names do not show): a warning, not -q's silence
    renamed = pd.concat(frames)
    renamed["product_types"] = renamed["product_types"].map(lambda ts: ["building sets" if t == "toy bricks" else t
                                                                         for t in ts])
    renamed.to_json(tmp_path / "renamed.jsonl", orient="records", lines=True, force_ascii=False)
    assert main(["train", "--data", str(tmp_path / "renamed.jsonl"), "--out", str(tmp_path / "unmapped"),
                 "--init-from", str(tmp_path / "child"), *flags]) == 0
    err = capsys.readouterr().err
    assert "new types 'building sets'; gone 'toy bricks'; a renamed type needs a label map" in err, err
    # the parent's own folder is not the new model's
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "child"), "--init-from",
                 str(tmp_path / "child"), "--overwrite", *flags]) == 2
    assert "is the parent model's folder" in capsys.readouterr().err
    assert load_model(tmp_path / "child").fingerprint == child.fingerprint
    assert grandchild.encoder == "ngram" and grandchild.config.model.encoder_options["dim"] == 16
    assert grandchild.config.train.lr == 0.05 and grandchild.config.data.path == str(data)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "deep"), "--init-from", str(tmp_path / "child"),
                 "--data.label_depth", "1", "--no-progress"]) == 2
    assert "its data.label_depth is None, this training's is 1" in capsys.readouterr().err
    # a config file goes over the parent's settings key by key (restating one option keeps the others)
    (tmp_path / "week.yaml").write_text("model:\n  encoder_options:\n    dim: 16\ntrain:\n  patience: 4\n")
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "filed"), "--init-from", str(tmp_path / "child"),
                 "--config", str(tmp_path / "week.yaml"), "--print-config"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["model"]["encoder_options"]["buckets"] == 4096 and printed["train"]["patience"] == 4
    (tmp_path / "typo.yaml").write_text("train:\n  lrr: 0.1\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "t"), "--init-from", str(tmp_path / "child"),
                 "--config", str(tmp_path / "typo.yaml")]) == 2
    assert "typo.yaml" in capsys.readouterr().err  # the error names the file
    # a label map alone, a missing parent: clean errors
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x"), "--label-map", "m.csv", *flags]) == 2
    assert "--label-map needs --init-from" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "y"), "--init-from", str(tmp_path / "nope"),
                 *flags]) == 3


def test_a_warm_started_model_starts_where_its_parent_was(aware_dir):
    """One optimiser step at a negligible rate: the warm-started model is its parent, a fresh
    one is still untrained (both without the query memory, which would score the near-duplicate
    test queries well without any training)."""
    from q2pt.models import Q2PTModel, load_model
    from support import handmade_dataset

    data = handmade_dataset()
    flags = {"train.max_steps": 1, "train.lr": 1e-9, "train.threads": 1, "train.batch_size": 32,
             "model.encoder_options": {"dim": 16, "buckets": 4096}, "model.memory_weight": 0.0}
    parent = load_model(aware_dir)
    warm = Q2PTModel(config=resolve_config(encoder="ngram", flags=flags))
    warm.fit(data, progress=False, warm_start=warm.warm_start_from(aware_dir))
    fresh = Q2PTModel(config=resolve_config(encoder="ngram", flags=flags)).fit(data, progress=False)
    r = {name: m.evaluate(data.test)["global"]["r_at_p"] for name, m in
         (("parent", parent), ("warm", warm), ("fresh", fresh))}
    assert r["warm"] == pytest.approx(r["parent"], abs=0.02) and r["fresh"] < r["parent"] - 0.3, r
    assert warm.manifest["parent"]["path"] == str(aware_dir)


def test_compare_composes_the_renames_of_a_chain_of_warm_starts(tmp_path):
    """B warm-started from A1, itself warm-started from A: A is judged under B's names through
    both label maps, while A1's folder is still the model B's manifest recorded."""
    from q2pt.comparison import lineage_renames
    from q2pt.io import sha256_of_file

    middle = tmp_path / "a1"
    middle.mkdir()
    (middle / "manifest.json").write_text(json.dumps(
        {"parent": {"fingerprint": "fp-a", "path": str(tmp_path / "a"), "label_map": {"x": "y", "k": "m"}}}))
    fp1 = sha256_of_file(middle / "manifest.json")
    b = {"parent": {"fingerprint": fp1, "path": str(middle), "label_map": {"y": "z", "q": "r"}}}
    assert lineage_renames(fp1, b) == {"y": "z", "q": "r"}  # the direct parent
    assert lineage_renames("fp-a", b) == {"x": "z", "k": "m", "y": "z", "q": "r"}  # x -> y -> z
    assert lineage_renames("fp-other", b) is None and lineage_renames("fp-a", {}) is None
    (middle / "manifest.json").write_text(json.dumps({"parent": {"fingerprint": "fp-a", "path": "", "label_map": {}}}))
    assert lineage_renames("fp-a", b) is None  # A1's folder holds another model now: the chain is broken
