"""Typed config: paper defaults, layering, overrides, strict key and value checking."""

import json

import pytest

from q2pt.config import (
    ENCODER_OVERRIDES,
    Config,
    encoder_kind,
    load_config_file,
    parse_overrides,
    parse_value,
    resolve_config,
    valid_keys,
)
from q2pt.errors import ConfigError


def test_paper_defaults():
    cfg = Config()
    assert cfg.train.lr == 8e-5
    assert cfg.model.dropout == 0.001
    assert cfg.train.batch_size == 211
    assert cfg.train.precision_target == 0.8
    assert cfg.model.head_hidden == []
    assert cfg.model.variant == "unified-aware"


def test_encoder_overrides_apply():
    ngram = resolve_config(encoder="ngram")
    assert ngram.train.lr == ENCODER_OVERRIDES["ngram"]["train"]["lr"] > 100 * 8e-5
    use = resolve_config(encoder="use")
    assert use.train.encoder_lr == 8e-5 and use.train.head_lr > use.train.encoder_lr
    hf = resolve_config(encoder="hf:/some/path")
    assert hf.model.encoder == "hf:/some/path" and hf.train.head_lr == ENCODER_OVERRIDES["hf"]["train"]["head_lr"]
    # a flag beats the encoder's default, and another encoder's defaults do not leak in
    assert resolve_config(encoder="use", flags={"train.head_lr": 1e-4}).train.head_lr == 1e-4
    assert resolve_config(encoder="ngram").train.head_lr is None


def test_layers_file_beats_encoder_overrides_and_flags_beat_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  encoder: ngram\n  dropout: 0.2\ntrain:\n  lr: 0.5\n  batch_size: 7\n")
    cfg = resolve_config(path)
    assert cfg.model.encoder == "ngram" and cfg.train.lr == 0.5  # file beats the ngram override
    assert cfg.train.batch_size == 7 and cfg.model.dropout == 0.2
    cfg = resolve_config(path, ["--train.lr", "1e-3", "--model.dropout=0.3"], flags={"model.variant": "non-unified"})
    assert cfg.train.lr == 1e-3 and cfg.model.dropout == 0.3 and cfg.model.variant == "non-unified"
    assert cfg.train.batch_size == 7  # untouched keys keep the file's value


def test_encoder_override_follows_the_final_encoder(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model": {"encoder": "use"}}))
    cfg = resolve_config(path, ["--model.encoder", "ngram"])
    assert cfg.model.encoder == "ngram" and cfg.train.lr == ENCODER_OVERRIDES["ngram"]["train"]["lr"]
    cfg = resolve_config(path, encoder="ngram")
    assert cfg.train.lr == ENCODER_OVERRIDES["ngram"]["train"]["lr"]


def test_a_recipe_of_another_encoder_says_which_of_its_rates_still_win(tmp_path, caplog):
    """A saved recipe holds its encoder's rates as resolved: with --encoder use, ngram's train.lr
    0.01 (and no encoder_lr/head_lr) trained use at 0.01, 125 times its default, without a word."""
    import logging

    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"model": {"encoder": "ngram"}, "train": {"lr": 0.01, "encoder_lr": None,
                                                                         "batch_size": 7}}))
    with caplog.at_level(logging.WARNING, logger="q2pt"):
        cfg = resolve_config(path, ["--train.encoder_lr", "1e-4"], encoder="use")
    assert cfg.train.lr == 0.01 and cfg.train.encoder_lr == 1e-4 and cfg.train.head_lr == 1e-2  # (as before)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "written for the ngram encoder: its train.lr 0.01 is used with use, whose default" \
        in said[0]  # encoder_lr is set by a flag; head_lr and batch_size are not in the file / not the encoder's
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="q2pt"):
        resolve_config(path, encoder="ngram")
    assert not caplog.records


def test_override_values_are_parsed_as_json_or_yaml_scalars():
    parsed = parse_overrides(
        ["--train.lr", "1e-3", "--model.head_hidden", "[64, 32]", "--data.path", "null",
         "--model.encoder_options.sparse=false", "--data.preset", "tiny"]
    )
    assert parsed == {
        "train.lr": 1e-3, "model.head_hidden": [64, 32], "data.path": None,
        "model.encoder_options.sparse": False, "data.preset": "tiny",
    }
    assert parse_value("yes") is True and parse_value("de_DE") == "de_DE" and parse_value("") == ""
    cfg = resolve_config(None, ["--model.encoder_options.dim", "16", "--model.head_hidden", "[8]"], "ngram")
    assert cfg.model.encoder_options == {"dim": 16} and cfg.model.head_hidden == [8]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--train.lrr", "1"], "train.lr, train.encoder_lr"),  # lists the valid keys
        (["--trian.lr", "1"], "valid sections: model, train, data"),
        (["--lr", "1"], "section.key"),
        (["--train.lr"], "needs a value"),
        (["train.lr", "1"], "unexpected argument"),
        (["--train.lr.x", "1"], "no sub-keys"),
    ],
)
def test_bad_override_keys_are_rejected_with_the_valid_ones(args, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_config(None, args)
    assert fragment in str(info.value)


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="'train.lrr'"):
        resolve_config(None, ["--train.lrr", "1"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--train.lr", "-1"], "train.lr"),
        (["--train.lr", "abc"], "train.lr"),
        (["--model.dropout", "1.0"], "model.dropout"),
        (["--model.variant", "semi-unified"], "model.variant"),
        (["--model.encoder", "bert"], "model.encoder"),
        (["--train.batch_size", "0"], "train.batch_size"),
        (["--train.batch_size", "2.5"], "train.batch_size"),
        (["--model.head_hidden", "[0]"], "model.head_hidden"),
        (["--train.locale_dropout", "1"], "train.locale_dropout"),
        (["--train.precision_target", "0"], "train.precision_target"),
        (["--data.preset", "huge"], "data.preset"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(args, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        resolve_config(None, args)


def test_config_file_errors_name_the_file(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        resolve_config(bad_yaml)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(unknown)
    assert "unknown.yaml" in str(info.value) and "'train.learning_rate'" in str(info.value)
    assert "train.lr" in str(info.value)
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_config({"optimizer": {"lr": 1}})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_config(tmp_path / "missing.yaml")
    for name, text in (("twice.yaml", "train:\n  lr: 0.002\n  lr: 0.004\n"),
                       ("twice.json", '{"train": {"lr": 0.1, "lr": 0.2}}')):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=f"{name}: the key 'lr' is given twice"):  # not the last one silently
            resolve_config(tmp_path / name)
    anchors = tmp_path / "anchors.yaml"  # a merge key is not a repeat, and a key written after it overrides it
    anchors.write_text("base: &b {lr: 0.003, patience: 2}\ntrain:\n  <<: *b\n  patience: 4\n")
    assert load_config_file(anchors)["train"] == {"lr": 0.003, "patience": 4}
    unhashable = tmp_path / "unhashable.yaml"
    unhashable.write_text("train:\n  ? [a, b]\n  : 1\n")
    with pytest.raises(ConfigError, match="unhashable.yaml"):
        load_config_file(unhashable)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(not_mapping)


def test_round_trip_through_a_dict():
    cfg = resolve_config(None, ["--train.lr", "0.002", "--model.head_hidden", "[4]"], "ngram")
    again = Config.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    data = cfg.to_dict()
    data["train"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        Config.from_dict(data)


def test_encoder_kind_and_valid_keys():
    assert encoder_kind("use") == "use" and encoder_kind("hf:x/y") == "hf"
    with pytest.raises(ValueError):
        encoder_kind("hf:")
    assert "train.locale_dropout" in valid_keys()
    assert valid_keys("data") == ["data.path", "data.preset", "data.seed", "data.label_depth", "data.label_separator",
                                  "data.locale_languages", "data.simulated_tree", "data.taxonomy"]


def test_use_freezes_its_embedding_table_by_default_and_options_override_it(tmp_path):
    assert resolve_config(encoder="use").model.encoder_options == {"embedding": "freeze"}
    assert resolve_config().model.encoder_options == {"embedding": "freeze"}  # use is the default encoder
    sparse = resolve_config(None, ["--model.encoder_options.embedding", "sparse"], "use")
    assert sparse.model.encoder_options == {"embedding": "sparse"}
    path = tmp_path / "cfg.yaml"
    path.write_text("model:\n  encoder_options:\n    max_tokens: 64\n")
    assert resolve_config(path).model.encoder_options == {"embedding": "freeze", "max_tokens": 64}
    assert resolve_config(encoder="ngram").model.encoder_options == {}  # other encoders are untouched


def test_renamed_keys_are_still_read(tmp_path):
    """train.num_threads (0.1.0) is train.threads now: old flags, files and model manifests still load."""
    assert resolve_config(None, ["--train.num_threads", "1"]).train.threads == 1
    assert resolve_config(flags={"train.num_threads": 2}).train.threads == 2
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  num_threads: 3\n")
    assert resolve_config(path).train.threads == 3
    old_manifest_config = resolve_config().to_dict()
    old_manifest_config["train"]["num_threads"] = old_manifest_config["train"].pop("threads")
    assert Config.from_dict(old_manifest_config).train.threads == 0


def test_a_saved_config_without_a_newer_key_reads_as_before_it():
    """A manifest written before the query memory, the name-initialised head, the type names as
    training queries and the tree's PR-AUC stopping says what its model does (no memory, random
    rows, no names, R@P); a config file without those keys gets today's defaults."""
    saved = resolve_config().to_dict()
    for key in ("memory_weight", "memory_dim", "head_init"):
        del saved["model"][key]
    old = Config.from_saved(saved)
    assert (old.model.memory_weight, old.model.memory_dim, old.model.head_init) == (0.0, 0, "random")
    new = Config.from_dict(saved)
    assert (new.model.memory_weight, new.model.memory_dim, new.model.head_init) == (0.5, 128, "auto")
    assert Config.from_saved(resolve_config().to_dict()) == resolve_config()  # a current save: unchanged
    for key in ("name_examples", "stop_metric", "subtype_names"):  # no type names, R@P for every model
        del saved["train"][key]
    old_train, new_train = Config.from_saved(saved).train, Config.from_dict(saved).train
    assert (old_train.name_examples, old_train.stop_metric, old_train.subtype_names) == (0.0, "r_at_p", False)
    assert (new_train.name_examples, new_train.stop_metric, new_train.subtype_names) == (0.3, "auto", True)
