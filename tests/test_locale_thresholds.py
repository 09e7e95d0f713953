"""How much validation data a locale needs for a threshold of its own
(``train.locale_threshold_min_positives``): by variant by default, as configured otherwise, the
same rule in training's calibration and for the experiment's baselines."""

from __future__ import annotations

import pytest

from q2pt.calibration import LOCALE_MIN_POSITIVES, locale_min_positives
from q2pt.config import Config, resolve_config
from q2pt.metrics import own_thresholds
from support import HANDMADE_LOCALES, need


def test_the_rule_by_variant_and_as_configured():
    assert locale_min_positives(None, unified=False) == 20
    assert locale_min_positives(None, unified=True) == LOCALE_MIN_POSITIVES[True] > 20
    assert locale_min_positives(7, unified=True) == locale_min_positives(7, unified=False) == 7
    saved = resolve_config().to_dict()
    del saved["train"]["locale_threshold_min_positives"]
    # a model saved before the key calibrated every variant's locales from 20 positives: it says so
    assert Config.from_saved(saved).train.locale_threshold_min_positives == 20
    assert Config.from_dict(saved).train.locale_threshold_min_positives is None


def _fit(variant: str, **flags):
    from q2pt.models import Q2PTModel
    from support import handmade_dataset

    cfg = resolve_config(encoder="ngram", flags={
        "model.variant": variant, "train.max_epochs": 4, "train.batch_size": 32, "train.lr": 0.05,
        "train.threads": 1, "model.encoder_options": {"dim": 16, "buckets": 4096}, **flags})
    return Q2PTModel(config=cfg).fit(handmade_dataset(), progress=False)


@pytest.mark.parametrize("variant,flags,own", [
    ("unified-aware", {}, False),  # ~50 validation positives a locale: below the unified floor
    ("unified-aware", {"train.locale_threshold_min_positives": 20}, True),
    ("non-unified", {}, True),  # its networks' own scales: from 20 positives
])
def test_training_calibrates_a_locale_threshold_only_with_enough_positives(variant, flags, own):
    need("torch")
    model = _fit(variant, **flags)
    details = model.manifest["threshold_details"]
    floor = locale_min_positives(flags.get("train.locale_threshold_min_positives"), variant != "non-unified")
    assert own_thresholds(details) == (sorted(HANDMADE_LOCALES) if own else [])
    for loc in HANDMADE_LOCALES:
        if own:  # enough positives: its own R@P threshold (the toy data is easy: the target is reached)
            assert details[loc].startswith("precision "), (loc, details[loc])
        else:
            assert details[loc].endswith(f"positives < {floor}"), (loc, details[loc])
            assert model.thresholds_[loc] == model.thresholds_["global"]


@pytest.mark.parametrize("overrides,expected", [
    ((), {"use-lr-unified": 200, "use-lr-per-locale": None}),  # None: not in the identity (20, as before)
    (("--train.locale_threshold_min_positives", "50"), {"use-lr-unified": 50, "use-lr-per-locale": 50}),
])
def test_a_cached_baseline_record_says_which_rule_calibrated_it(tmp_path, overrides, expected):
    """A unified baseline's run identity records the floor it is calibrated with, so that a
    record calibrated before the rule (every locale from 20 positives) is not a cache hit; a
    per-locale baseline's identity has no new field (20, as before)."""
    from q2pt.experiments.runner import ExperimentRunner, RunSpec
    from q2pt.experiments.settings import resolve_settings
    from support import handmade_dataset

    runner = ExperimentRunner(handmade_dataset(), resolve_settings("tiny", None, {"baselines": []}),
                              tmp_path / "out", train_overrides=list(overrides), encoder="ngram", progress=False)
    for name, floor in expected.items():
        identity = runner.run_identity(RunSpec(f"main/{name}", "baseline", name, name), [runner.main_eval()])
        assert identity.get("locale_min_positives") == floor, name
        assert runner._locale_min_positives(RunSpec(name, "baseline", name, name)) == (floor or 20)
    variant = RunSpec("main/unified-aware", "variant", "unified-aware", "u", config=runner.config_for("unified-aware"))
    assert runner.run_identity(variant, []).get("locale_min_positives") == expected["use-lr-unified"]
