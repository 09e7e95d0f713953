"""Any Hugging Face encoder (``AutoModel`` + ``AutoTokenizer``), fine-tuned end to end.

``hf:NAME_OR_PATH`` loads a hub model (when the user has it cached or can download it) or a
local folder written by ``save_pretrained``. The paper's encoder is
``hf:distilbert-base-multilingual-cased``. The sentence embedding is the attention-masked
mean of the last hidden states (``pooling="mean"``, default) or the first token's state
(``pooling="cls"``).

Locale tokens are added special tokens ``[loc_<locale>]`` (the embedding matrix is resized;
a new row starts as the mean input embedding of the locale's code and language name), put
in front of the query text so they follow the tokenizer's own start token.

``save_assets`` writes the tokenizer and the model config into the model's ``encoder/``
folder; ``from_config`` with that folder builds the architecture from the saved config
without touching the network (weights come from the model's ``state_dict``).
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from q2pt.encoders import Encoder, torch
from q2pt.errors import ConfigError, ModelLoadError, require

POOLING = ("mean", "cls")
_OPTIONS = ("pooling", "max_length")


def locale_token(locale: str) -> str:
    """The added special token of a locale: ``"de_DE"`` -> ``"[loc_de_DE]"``."""
    return f"[loc_{locale}]"


def _transformers() -> Any:
    transformers = require("transformers", "hf")
    require("tokenizers", "hf")
    return transformers


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (or an existing path) is a folder."""
    return (
        name.startswith((".", "~", "/", "\\"))
        or name.count("/") >= 2
        or "\\" in name
        or Path(name).expanduser().exists()
    )


def _in_hub_cache(name: str) -> bool:
    """Whether the hub model ``name`` is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id=name, filename="config.json"), str)
    except Exception:  # an invalid repo id, an old huggingface_hub...
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint, so that an offline machine fails at once instead
    of after the hub client's retries. Assumed reachable when offline mode is not set but a
    proxy is configured (the proxy is what we would have to test)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def quiet_progress(transformers: Any) -> Iterator[None]:
    """Hide transformers' weight-loading progress bars while we load (restored afterwards)."""
    logging = transformers.utils.logging
    enabled = logging.is_progress_bar_enabled()
    if enabled:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def load_pretrained(name: str) -> tuple[Any, Any]:
    """(tokenizer, model) of ``name`` (a local folder, or a hub id: from the local cache when
    it is there, else downloaded) in float32; a ConfigError that says why when it cannot be
    found locally nor downloaded."""
    transformers = _transformers()
    path = Path(name).expanduser()
    hint = "Give a local folder saved with save_pretrained, or a hub id you have access to."
    if _looks_like_path(name) and not path.is_dir():
        raise ConfigError(f"hf encoder: could not load the model {name!r}: no such local folder. {hint}")
    kwargs: dict[str, Any] = {}
    if path.is_dir():
        source = str(path)
    else:
        source = name
        if _in_hub_cache(name):
            kwargs["local_files_only"] = True
        elif not _hub_reachable():
            raise ConfigError(
                f"hf encoder: could not load the model {name!r}: it is not a local folder nor in the "
                f"Hugging Face cache, and the hub cannot be reached to download it (offline). {hint}"
            )
    try:
        with quiet_progress(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            model = transformers.AutoModel.from_pretrained(source, dtype=torch.float32, **kwargs)
    except Exception as exc:  # the hub client raises many types (OSError, ValueError, httpx...)
        where = (
            f"the folder {source!r} does not hold a loadable model (config.json, weights, tokenizer)"
            if path.is_dir()
            else "it is not in the local Hugging Face cache and could not be downloaded "
            "(unknown model id, no access, or no network)"
        )
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"hf encoder: could not load the model {name!r}: {where}. {hint} ({type(exc).__name__}: {first})"
        ) from exc
    return tokenizer, model


class HFEncoder(Encoder):
    """A Hugging Face transformer encoder with mean or CLS pooling.

    Options: ``pooling`` (``"mean"`` | ``"cls"``), ``max_length`` (truncation, in tokens).
    """

    kind = "hf"
    default_lr = 5e-5

    def __init__(
        self,
        name: str,
        locales: Sequence[str] | None = None,
        *,
        pooling: str = "mean",
        max_length: int = 64,
        _assets: str | Path | None = None,
    ) -> None:
        super().__init__(locales)
        if pooling not in POOLING:
            raise ConfigError(f"hf encoder: pooling must be one of {POOLING}, got {pooling!r}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 4:
            raise ConfigError(f"hf encoder: max_length must be an integer >= 4, got {max_length!r}")
        self.name = str(name)
        self.pooling = pooling
        self.max_length = max_length
        if _assets is not None:
            tokenizer, model = self._from_assets(Path(_assets))
        else:
            tokenizer, model = load_pretrained(self.name)
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder-style tokenizers have no pad
        self.tokenizer = tokenizer
        self.model = model
        self._locale_tokens = [locale_token(loc) for loc in self.locales]
        self._add_locale_tokens()
        self.dim = int(model.config.hidden_size)

    def _from_assets(self, folder: Path) -> tuple[Any, Any]:
        transformers = _transformers()
        try:
            with quiet_progress(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
                model = transformers.AutoModel.from_config(config, dtype=torch.float32)
        except Exception as exc:  # the loaders raise many types for a broken folder
            raise ModelLoadError(
                f"cannot rebuild the hf encoder from {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        return tokenizer, model

    @torch.no_grad()
    def _add_locale_tokens(self) -> None:
        tokens = self._locale_tokens
        if not tokens:
            return
        tokenizer = self.tokenizer
        new = [t for t in tokens if t not in tokenizer.get_vocab()]
        if new:
            tokenizer.add_tokens(new, special_tokens=True)
        embeddings = self.model.get_input_embeddings()
        if embeddings.weight.shape[0] < len(tokenizer):
            self.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            embeddings = self.model.get_input_embeddings()
        table = embeddings.weight
        for tok, loc in zip(tokens, self.locales):
            if tok not in new:
                continue  # came with the tokenizer (rebuilt from assets): weights follow
            self._seed_row(table, tok, loc)

    def _seed_row(self, table: Any, token: str, locale: str) -> None:
        tokenizer = self.tokenizer
        ids = tokenizer(self.seed_text(locale), add_special_tokens=False)["input_ids"]
        ids = [i for i in ids if i != tokenizer.unk_token_id and i < table.shape[0]]
        if ids:
            table[tokenizer.convert_tokens_to_ids(token)] = table[ids].mean(0)

    @torch.no_grad()
    def _seed_locale_tokens(self) -> None:
        table = self.model.get_input_embeddings().weight
        for tok, loc in zip(self._locale_tokens, self.locales):
            self._seed_row(table, tok, loc)

    # --------------------------------------------------------------- interface
    @property
    def spec(self) -> str:
        return f"hf:{self.name}"

    def locale_rows(self) -> None:
        return None  # rows of the resized vocabulary, placed by the tokenizer: a warm start needs the same locales

    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        """``{"input_ids": (B, T), "attention_mask": (B, T)}``, padded to the longest query."""
        queries = list(queries)
        loc = self.locale_ids(locales, len(queries))
        tokens = self._locale_tokens
        texts = [q if li is None else f"{tokens[li]} {q}" for q, li in zip(queries, loc)]
        if not texts:
            return {"input_ids": torch.zeros(0, 1, dtype=torch.long), "attention_mask": torch.zeros(0, 1, dtype=torch.long)}
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, batch: dict[str, Any]) -> Any:
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        if input_ids.shape[0] == 0:
            return torch.zeros(0, self.dim, device=input_ids.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def get_config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "locales": list(self.locales),
            "pooling": self.pooling,
            "max_length": self.max_length,
        }

    def save_assets(self, folder: str | Path) -> None:
        """Write the tokenizer (with the locale tokens) and the model config into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        self.model.config.save_pretrained(str(folder))

    @classmethod
    def from_config(cls, config: dict[str, Any], folder: str | Path | None = None) -> "HFEncoder":
        """Rebuild from ``get_config()``: from the assets in ``folder`` when it holds a saved
        config (no network, random weights to be replaced by the state_dict), else from
        ``config["name"]`` (pretrained)."""
        options = {k: v for k, v in config.items() if k not in ("kind", "locales", "name")}
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown or "name" not in config:
            raise ModelLoadError(
                f"hf encoder config must have a 'name' and only {', '.join(_OPTIONS)}; got {sorted(config)}"
            )
        assets = Path(folder) if folder is not None and (Path(folder) / "config.json").is_file() else None
        return cls(config["name"], locales=config.get("locales") or None, _assets=assets, **options)
