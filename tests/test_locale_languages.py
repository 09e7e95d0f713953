"""A store is not a language: locale tokens are seeded from the store's languages (the
simulator's map, a dataset's locales.json, or data.locale_languages), and a store id that is
a language code (the dev set's de/ja) keeps working without a map."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from q2pt.config import resolve_config
from q2pt.data import load_dataset
from q2pt.data.taxonomy import LOCALES as SIMULATED_STORES
from q2pt.encoders import build_encoder, locale_seed_text
from q2pt.errors import ConfigError, DataError


def test_seed_text_of_the_products_stores():
    """Every store of the simulated shop gets its languages' names, not a reading of its id
    as a language code (uk is not Ukrainian, ca not Catalan, se and jp not nothing)."""
    texts = {store: locale_seed_text(store, langs) for store, langs in SIMULATED_STORES.items()}
    assert texts["uk"] == "uk English" and texts["ca"] == "ca English French"
    assert texts["se"] == "se Swedish" and texts["jp"] == "jp Japanese" and texts["ae"] == "ae Arabic English"
    assert not any(word in " ".join(texts.values()) for word in ("Ukrainian", "Catalan"))
    # without a map the id is read as a language code: right for the dev set's stores
    assert locale_seed_text("uk") == "uk Ukrainian"  # (which is why the map exists)
    assert locale_seed_text("de") == "de German" and locale_seed_text("ja") == "ja Japanese"


def test_use_locale_tokens_start_from_the_stores_languages():
    enc = build_encoder("use", locales=["uk", "se", "de"], locale_languages={"uk": ["en"], "se": ["sv"]})
    plain = build_encoder("use", locales=["uk", "se", "de"])
    table = enc.embedding.weight

    def mean_of(text):
        ids = [j for j in enc._piece_ids(text)[1:-1] if 0 < j < table.shape[0]]
        return table[ids].mean(0)

    assert torch.allclose(enc.locale_embedding[0], mean_of("uk English"))
    assert torch.allclose(enc.locale_embedding[1], mean_of("se Swedish"))
    assert torch.allclose(enc.locale_embedding[2], plain.locale_embedding[2])  # de: no entry, read as German
    assert not torch.allclose(enc.locale_embedding[0], plain.locale_embedding[0])
    assert enc.locale_languages == {"uk": ["en"], "se": ["sv"]}


def test_datasets_carry_their_map(tmp_path):
    simulated = load_dataset(None, preset="tiny")
    assert simulated.locale_languages["uk"] == ["en"] and simulated.locale_languages["ca"] == ["en", "fr"]
    rows = pd.DataFrame({"query": [f"q{i}" for i in range(6)], "locale": ["uk", "se"] * 3,
                         "product_types": [["a"]] * 6, "weight": 1.0})
    for split in ("train", "valid", "test"):
        rows.to_json(tmp_path / f"{split}.jsonl", orient="records", lines=True)
    assert load_dataset(tmp_path, validate=False).locale_languages == {}
    (tmp_path / "locales.json").write_text(json.dumps({"uk": ["en"], "se": ["sv"]}))
    assert load_dataset(tmp_path, validate=False).locale_languages == {"uk": ["en"], "se": ["sv"]}
    (tmp_path / "locales.json").write_text(json.dumps({"uk": "en"}))
    with pytest.raises(DataError, match=r"locales\.json.*'uk'"):
        load_dataset(tmp_path, validate=False)


def test_config_map_is_validated_and_reaches_the_model(tmp_path):
    with pytest.raises(ConfigError, match="uk"):
        resolve_config(overrides={"data.locale_languages": {"uk": []}})
    from q2pt.models import Q2PTModel

    data = load_dataset(None, preset="tiny")
    cfg = resolve_config(None, ["--train.max_epochs", "1", "--train.max_steps", "2", "--train.threads", "1",
                                "--model.encoder_options.dim", "8", "--model.encoder_options.buckets", "64"], "ngram",
                         flags={"data.locale_languages": {"uk": ["en", "cy"]}})
    model = Q2PTModel(config=cfg).fit(data, progress=False)
    langs = model.manifest["data"]["locale_languages"]
    assert langs["uk"] == ["en", "cy"] and langs["se"] == ["sv"]  # config over the simulator's map
    assert np.isfinite(model.predict_proba(["shoes"], ["uk"])).all()
