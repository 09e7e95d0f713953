"""TEST HELPER, not part of q2pt's API: builds tiny, random, offline models for the test suite
and the benchmarks (no download, a few seconds).

``make_tiny_hf_model(folder, texts)`` writes a randomly initialised DistilBERT and a WordPiece
tokenizer trained on ``texts`` with ``save_pretrained``, so that ``build_encoder("hf:<folder>")``
loads it exactly like a downloaded model. Its outputs mean nothing until trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from q2pt.errors import require

__all__ = ["make_tiny_hf_model"]

_SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}


def make_tiny_hf_model(
    folder: str | Path,
    texts: Iterable[str],
    dim: int = 32,
    layers: int = 2,
    heads: int = 2,
    *,
    vocab_size: int = 2000,
    max_positions: int = 128,
    seed: int = 0,
) -> Path:
    """Write a tiny random DistilBERT + WordPiece tokenizer (cased, trained on ``texts``) to
    ``folder`` and return it; ``hf:<folder>`` then loads it offline.

    Deterministic for a given ``texts``/``seed`` (the global torch RNG is left untouched).
    """
    torch = require("torch", "torch")
    transformers = require("transformers", "hf")
    tokenizers = require("tokenizers", "hf")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("make_tiny_hf_model needs some non-empty texts to train the tokenizer on")
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token=_SPECIAL["unk"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(_SPECIAL.values()), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    cls_id, sep_id = tok.token_to_id(_SPECIAL["cls"]), tok.token_to_id(_SPECIAL["sep"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=max_positions,
        **{f"{k}_token": v for k, v in _SPECIAL.items()},
    )
    fast.save_pretrained(str(folder))

    config = transformers.DistilBertConfig(
        vocab_size=tok.get_vocab_size(),
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=4 * dim,
        max_position_embeddings=max_positions,
        pad_token_id=tok.token_to_id(_SPECIAL["pad"]),
    )
    from q2pt.encoders.hf import quiet_progress

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.DistilBertModel(config)
    with quiet_progress(transformers):
        model.save_pretrained(str(folder))
    return folder
