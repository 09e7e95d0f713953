"""The one inference core (q2pt.inference): locale resolution, dispatch, scoring, selection.

A fake forward pass stands in for the networks, so each rule is checked on its own; the
agreement of the library and the serving runtimes on real models is in test_serving.py."""

import numpy as np
import pytest

from q2pt.errors import ConfigError, UnknownLocaleError
from q2pt.inference import UNIFIED, InferenceCore, select_types, threshold_of

CLASSES = ["bag", "hat", "shoe"]


def fake_core(variant, *, fallback=None, unseen="error", calls=None):
    """Network scores: unified -> [0.1, 0.5, 0.9] (+0.05 with a locale token); a per-locale
    network 'de' scores only hat and shoe, 'fr' all three."""
    if variant == "non-unified":
        tokenizers = {"de": lambda q, t: (q, t), "fr": lambda q, t: (q, t)}
        labels = {"de": ["shoe", "hat"], "fr": CLASSES}
    else:
        tokenizers = {UNIFIED: lambda q, t: (q, t)}
        labels = {}

    def forward(key, batch):
        queries, token_locales = batch
        if calls is not None:
            calls.append((key, len(queries)))
        if key == "de":
            return np.tile([0.7, 0.2], (len(queries), 1))
        bump = [0.05 if token_locales and token_locales[i] else 0.0 for i in range(len(queries))]
        return np.asarray([[0.1 + b, 0.5 + b, 0.9 + b] for b in bump])

    return InferenceCore(variant=variant, classes=CLASSES, locales=["de", "fr"],
                         thresholds={"global": 0.6, "de": 0.3}, tokenizers=tokenizers, forward=forward,
                         network_labels=labels, fallback_locale=fallback, unseen=unseen)


def test_unified_aware_gives_known_locales_their_token_and_unseen_none():
    core = fake_core("unified-aware")
    de, xx = core.resolve("de"), core.resolve("xx")
    assert (de.key, de.token_locale, de.locale_used, de.warning) == (UNIFIED, "de", "de", "")
    assert (xx.key, xx.token_locale, xx.locale_used) == (UNIFIED, None, None)
    assert "unseen locale xx" in xx.warning and "agnostic" in xx.warning
    scores = core.scores(["q", "q"], [de, xx])
    np.testing.assert_allclose(scores, [[0.15, 0.55, 0.95], [0.1, 0.5, 0.9]])
    assert core.threshold_for("de") == (0.3, "locale") and core.threshold_for(None) == (0.6, "global")
    # calibration writes the global value for a locale without its own; which locales have their own
    # comes from its details (a one-locale model's own threshold is the global one's value)
    both = {"global": 0.6, "de": 0.6, "fr": 0.4}
    assert threshold_of(both, "de", own=["fr"]) == (0.6, "global") and threshold_of(both, "fr", own=["fr"])[1] == "locale"
    assert threshold_of(both, "de", own=["de", "fr"]) == (0.6, "locale")
    assert threshold_of(both, "de") == (0.6, "global") and threshold_of(both, "fr") == (0.4, "locale")  # no details


def test_unified_agnostic_uses_the_locale_only_for_the_threshold():
    core = fake_core("unified-agnostic")
    de = core.resolve("de")
    assert de.token_locale is None and de.locale_used == "de"
    got = core.select(core.scores(["q"], [de]), [de])
    assert [t for t, _ in got[0]] == ["shoe", "hat"]  # the de threshold 0.3, not the global 0.6


def test_non_unified_dispatches_per_locale_and_marks_unscored_labels_nan():
    calls = []
    core = fake_core("non-unified", calls=calls)
    res = core.resolve_all(["de", "fr", "de"])
    scores = core.scores(["a", "b", "c"], res)
    assert sorted(calls) == [("de", 2), ("fr", 1)]
    assert np.isnan(scores[0, 0]) and scores[0, 2] == pytest.approx(0.7) and scores[0, 1] == pytest.approx(0.2)
    # a label the query's network does not score is never selected, even at threshold 0
    assert [t for t, _ in core.select(scores, res, threshold=0.0)[0]] == ["shoe", "hat"]


def test_non_unified_unknown_locales_error_fallback_or_skip():
    with pytest.raises(UnknownLocaleError) as info:
        fake_core("non-unified").resolve_all(["de", "xx", "yy"])
    assert "xx, yy" in str(info.value) and "--fallback-locale" in str(info.value)
    fb = fake_core("non-unified", fallback="fr").resolve("xx")
    assert (fb.key, fb.locale_used) == ("fr", "fr") and "fallback locale fr" in fb.warning
    skip = fake_core("non-unified", unseen="skip")
    res = skip.resolve_all(["xx"])
    assert res[0].key is None and np.isnan(skip.scores(["q"], res)).all()
    with pytest.raises(UnknownLocaleError, match="not a locale of the model"):
        fake_core("non-unified", fallback="it")


def test_batches_give_the_same_scores_as_one_pass():
    calls = []
    core = fake_core("unified-aware", calls=calls)
    res = core.resolve_all(["de", "xx", "fr", "de", "xx"])
    whole = core.scores(list("abcde"), res)
    calls.clear()
    np.testing.assert_array_equal(core.scores(list("abcde"), res, batch_size=2), whole)
    assert [n for _, n in calls] == [2, 2, 1]
    with pytest.raises(ConfigError):
        core.scores(["a"], res[:1], batch_size=0)


def test_select_types_orders_best_first_cuts_per_row_and_top_k():
    scores = np.asarray([[0.2, np.nan, 0.9], [0.5, 0.5, 0.1]], dtype=np.float32)
    assert select_types(scores, CLASSES, [0.1, 0.5]) == [[("shoe", pytest.approx(0.9)), ("bag", pytest.approx(0.2))],
                                                       [("bag", 0.5), ("hat", 0.5)]]
    assert select_types(scores, CLASSES, 0.0, top_k=1) == [[("shoe", pytest.approx(0.9))], [("bag", 0.5)]]
    with pytest.raises(ConfigError):
        select_types(scores, CLASSES, 0.5, top_k=0)


def test_locale_ids_compare_without_case():
    """One rule, everywhere: "DE" and " de " are the model's "de" (the data layer refuses a dataset that
    spells one store two ways, tested in test_hardening)."""
    for variant in ("unified-aware", "non-unified"):
        core = fake_core(variant)
        res = core.resolve_all(["DE", "de"])
        assert res[0].locale == "DE" and res[0].locale_used == res[1].locale_used == "de"
        assert res[0].key == res[1].key and res[0].warning == ""
        np.testing.assert_array_equal(*core.scores(["q", "q"], res))
        # nor with surrounding spaces (a locale id has none: the data layer refuses them)
        (padded,) = core.resolve_all([" de "])
        assert padded.locale_used == "de" and padded.warning == "" and padded.key == res[1].key
