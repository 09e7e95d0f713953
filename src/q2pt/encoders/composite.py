"""Several encoders side by side: ``"use+ngram"`` concatenates the outputs of its parts.

A composite spec joins part specs with ``+`` (``use+ngram``, ``use+e5``, ``use+ngram+e5``).
Each part tokenizes the query on its own (its tensors are prefixed ``p<i>.`` in the batch)
and the outputs are concatenated, so the head sees every part's features. Typical uses: a
character n-gram branch trained from scratch beside the pretrained encoder (misspellings,
brand names and model numbers that a pretrained vocabulary splits badly), or frozen e5
features as an extra input.

Options (``model.encoder_options``) are given per part kind:
``{"use": {"embedding": "sparse"}, "ngram": {"dim": 64}}``. Every part of a locale-aware
model gets the locale (each its own locale token).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from q2pt.errors import ConfigError, ModelLoadError

from . import Encoder, build_encoder, encoder_from_config, parse_spec, torch

__all__ = ["CompositeEncoder", "split_spec"]

SEPARATOR = "+"


def split_spec(spec: str) -> list[str]:
    """``"use+ngram"`` -> ``["use", "ngram"]``; raises ConfigError for an empty or nested part."""
    parts = [p.strip() for p in str(spec).split(SEPARATOR)]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"composite encoder spec {spec!r} must join at least two encoder specs with '+'")
    kinds = [parse_spec(p)[0] for p in parts]
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"composite encoder spec {spec!r} names an encoder kind twice")
    return parts


class CompositeEncoder(Encoder):
    """The concatenation of several encoders' outputs (see the module doc)."""

    kind = "composite"

    def __init__(
        self,
        spec: str,
        locales: Sequence[str] | None = None,
        *,
        parts: Sequence[Encoder] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(locales)
        specs = split_spec(spec)
        if parts is None:
            kinds = [parse_spec(s)[0] for s in specs]
            unknown = sorted(set(options) - set(kinds))
            if unknown:
                raise ConfigError(
                    f"encoder {spec!r}: options are given per part kind ({', '.join(kinds)}); unknown: {', '.join(unknown)}"
                )
            for kind, value in options.items():
                if not isinstance(value, dict):
                    raise ConfigError(f"encoder {spec!r}: options of part {kind!r} must be a mapping, got {value!r}")
            parts = [build_encoder(s, locales=locales, **options.get(parse_spec(s)[0], {})) for s in specs]
        self._spec = SEPARATOR.join(specs)
        self.parts = torch.nn.ModuleList(parts)
        self._parts: list[Encoder] = list(parts)  # the same modules, typed
        self.dim = sum(int(p.dim) for p in self._parts)

    @property
    def spec(self) -> str:
        return self._spec

    def tokenize(self, queries: Sequence[str], locales: Sequence[str] | None) -> dict[str, Any]:
        queries = list(queries)
        return self.join([part.tokenize(queries, locales) for part in self._parts])

    @staticmethod
    def join(part_batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One batch from each part's batch (keys prefixed ``p<i>.``); the training loop's
        token cache gathers every part's tokens on its own and joins them with this."""
        return {f"p{i}.{key}": value for i, batch in enumerate(part_batches) for key, value in batch.items()}

    def forward(self, batch: dict[str, Any]) -> Any:
        outs = []
        for i, part in enumerate(self._parts):
            prefix = f"p{i}."
            outs.append(part({k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)}))
        return torch.cat(outs, dim=1)

    def seed_locale_tokens(self, languages: Mapping[str, Sequence[str]]) -> None:
        super().seed_locale_tokens(languages)
        for part in self._parts:
            if part.locales:
                part.seed_locale_tokens(languages)

    def sparse_parameters(self) -> list[Any]:
        return [p for part in self._parts for p in part.sparse_parameters()]

    def locale_rows(self) -> dict[str, int] | None:
        out: dict[str, int] = {}
        for i, part in enumerate(self._parts):
            rows = part.locale_rows()
            if rows is None:
                return None
            out.update({f"parts.{i}.{k}": v for k, v in rows.items()})
        return out

    def pretrained_state(self) -> dict[str, Any]:
        return {f"parts.{i}.{k}": v for i, part in enumerate(self._parts) for k, v in part.pretrained_state().items()}

    def pretrained_resource(self) -> dict[str, str] | None:
        # the resource of the part whose tensors pretrained_state() rebuilds (use: its table)
        found = [part.pretrained_resource() for part in self._parts if part.pretrained_state()]
        if len(found) > 1:  # pragma: no cover - only use has a pretrained table today
            raise ConfigError("a composite encoder supports at most one part with a pretrained table")
        return found[0] if found else None

    def get_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self._spec, "locales": list(self.locales),
                "parts": [part.get_config() for part in self._parts]}

    def save_assets(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for i, part in enumerate(self._parts):
            part.save_assets(folder / f"part-{i}")

    @classmethod
    def from_config(
        cls, config: dict[str, Any], folder: str | Path | None = None, *, load_pretrained: bool = True
    ) -> "CompositeEncoder":
        parts_cfg = config.get("parts")
        if not isinstance(parts_cfg, list) or len(parts_cfg) < 2 or not isinstance(config.get("spec"), str):
            raise ModelLoadError("composite encoder config needs 'spec' and a list of at least two 'parts'")
        parts = [
            encoder_from_config(
                part, None if folder is None else Path(folder) / f"part-{i}", load_pretrained=load_pretrained
            )
            for i, part in enumerate(parts_cfg)
        ]
        return cls(config["spec"], locales=config.get("locales") or None, parts=parts)
