"""The built-in product-type taxonomy of the simulated global shop.

One module per department, named ``dNN_<id>.py``, each exporting a plain ``DEPARTMENT``
dict (pure data; see any department module for the format). :func:`load_taxonomy`
discovers the modules, validates every one of them and returns a :class:`Taxonomy`:
departments, their groups (the optional middle level of the store's tree, ``department >
group > type``), product types, the types sold in each locale and a surface-form lookup
per language.

Validation is strict: a malformed department (missing language, fewer than two surface
forms, duplicated id, related id that does not resolve, unknown attribute slot...) raises
a :class:`q2pt.errors.DataError` listing every problem with the module file and the
field path (``types[3].names.fr``).
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from q2pt.errors import DataError, Problem

__all__ = [
    "ATTRIBUTE_SLOTS",
    "LANGUAGES",
    "LOCALES",
    "RELATION_KINDS",
    "Department",
    "ProductType",
    "Taxonomy",
    "build_taxonomy",
    "load_taxonomy",
]

#: The 12 languages every type must be named in.
LANGUAGES: tuple[str, ...] = ("en", "fr", "es", "pt", "de", "it", "nl", "sv", "pl", "tr", "ar", "ja")

#: The 20 stores of the simulated shop and the language(s) shoppers use in each.
LOCALES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "us": ("en",),
        "ca": ("en", "fr"),
        "mx": ("es",),
        "br": ("pt",),
        "uk": ("en",),
        "de": ("de",),
        "fr": ("fr",),
        "it": ("it",),
        "es": ("es",),
        "nl": ("nl",),
        "se": ("sv",),
        "pl": ("pl",),
        "tr": ("tr",),
        "ae": ("ar", "en"),
        "sa": ("ar",),
        "eg": ("ar",),
        "in": ("en",),
        "jp": ("ja",),
        "au": ("en",),
        "sg": ("en",),
    }
)

#: Attribute slots a type may declare; the simulator fills them in the query's language.
ATTRIBUTE_SLOTS: frozenset[str] = frozenset(
    {
        "brand",
        "colour",
        "size_apparel",
        "size_shoe",
        "size_volume",
        "size_weight",
        "size_length",
        "size_screen",
        "capacity_storage",
        "material",
        "audience",
        "pack",
        "power",
        "style",
        "age",
        "model_number",
    }
)

#: Kinds of links between related types (co-clicked in the simulated click log).
RELATION_KINDS: tuple[str, ...] = ("accessory", "complement", "substitute")

_ID_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_MODULE_RE = re.compile(r"^d\d\d_[a-z0-9_]+$")
_PRIOR_RANGE = (0.05, 20.0)


def normalize_form(text: str) -> str:
    """Canonical spelling of a surface form: NFKC, lower case, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


@dataclass(frozen=True)
class ProductType:
    """One product type: its names per language and how it relates to other types."""

    id: str
    department: str
    names: Mapping[str, tuple[str, ...]]  # language -> surface forms, canonical first
    attributes: tuple[str, ...]
    related: Mapping[str, tuple[str, ...]]  # relation kind -> type ids
    prior: float
    locales_only: tuple[str, ...] | None = None
    group: str | None = None  # the middle level of the store's tree, if any

    def path(self) -> tuple[str, ...]:
        """Its place in the store's tree: ``(department, group, id)`` or ``(department, id)``."""
        return (self.department, self.group, self.id) if self.group else (self.department, self.id)

    def name(self, language: str = "en") -> str:
        """The canonical name in ``language``."""
        return self.names[language][0]

    def sold_in(self, locale: str) -> bool:
        return self.locales_only is None or locale in self.locales_only

    def related_ids(self) -> tuple[str, ...]:
        return tuple(t for kind in RELATION_KINDS for t in self.related.get(kind, ()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "department": self.department,
            "names": {lang: list(self.names[lang]) for lang in LANGUAGES},
            "attributes": list(self.attributes),
            "related": {kind: list(self.related.get(kind, ())) for kind in RELATION_KINDS},
            "prior": self.prior,
            "locales_only": list(self.locales_only) if self.locales_only is not None else None,
            "group": self.group,
        }


@dataclass(frozen=True)
class Department:
    id: str
    names: Mapping[str, str]
    type_ids: tuple[str, ...]
    source: str = ""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # group id -> type ids

    def name(self, language: str = "en") -> str:
        return self.names[language]


@dataclass(frozen=True)
class Taxonomy:
    """The validated taxonomy. Types are kept in department order, then file order."""

    departments: Mapping[str, Department]
    types: Mapping[str, ProductType]
    _lookup: Mapping[str, Mapping[str, tuple[str, ...]]] = field(repr=False, default_factory=dict)

    # ---- queries -----------------------------------------------------------------
    @property
    def type_ids(self) -> list[str]:
        return list(self.types)

    def sold_in(self, locale: str) -> list[str]:
        """Ids of the types sold in ``locale`` (honours ``locales_only``)."""
        return [t.id for t in self.types.values() if t.sold_in(locale)]

    def lookup(self, form: str, language: str) -> list[str]:
        """Ids of the types that ``form`` names in ``language`` (several if ambiguous)."""
        return list(self._lookup.get(language, {}).get(normalize_form(form), ()))

    def summary(self) -> dict[str, Any]:
        return {
            "n_departments": len(self.departments),
            "n_types": len(self.types),
            "n_locale_restricted": sum(t.locales_only is not None for t in self.types.values()),
            "n_related_links": sum(len(t.related_ids()) for t in self.types.values()),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the ``taxonomy.json`` of a simulated dataset)."""
        return {
            "languages": list(LANGUAGES),
            "locales": {loc: list(langs) for loc, langs in LOCALES.items()},
            "attribute_slots": sorted(ATTRIBUTE_SLOTS),
            "departments": [
                {"id": d.id, "names": dict(d.names), "types": list(d.type_ids),
                 "groups": {g: list(ts) for g, ts in d.groups.items()}}
                for d in self.departments.values()
            ],
            "types": [t.to_dict() for t in self.types.values()],
        }


# ---- validation ---------------------------------------------------------------------


def _check_department(dep: Any, source: str, problems: list[Problem]) -> None:
    """Append every format problem of one DEPARTMENT dict to ``problems``."""

    def bad(fieldname: str | None, message: str) -> None:
        problems.append(Problem(source, None, fieldname, message))

    if not isinstance(dep, Mapping):
        bad("DEPARTMENT", f"must be a dict, got {type(dep).__name__}")
        return
    for key in ("id", "name", "types"):
        if key not in dep:
            bad(key, "missing")
    unknown = set(dep) - {"id", "name", "types", "groups"}
    if unknown:
        bad(None, f"unknown department keys {sorted(unknown)}")
    dep_id = dep.get("id")
    if "id" in dep and (not isinstance(dep_id, str) or not _ID_RE.match(dep_id)):
        bad("id", f"department id {dep_id!r} is not snake_case")
    names = dep.get("name")
    if "name" in dep:
        if not isinstance(names, Mapping):
            bad("name", "must be a dict language -> name")
        else:
            for lang in LANGUAGES:
                if not isinstance(names.get(lang), str) or not names[lang].strip():
                    bad(f"name.{lang}", "missing or empty department name")
    types = dep.get("types")
    if "types" in dep and (not isinstance(types, list) or not types):
        bad("types", "must be a non-empty list")
        return
    _check_groups(dep.get("groups"), [t.get("id") for t in types or [] if isinstance(t, Mapping)], bad)
    for i, t in enumerate(types or []):
        where = f"types[{i}]"
        if not isinstance(t, Mapping):
            bad(where, "must be a dict")
            continue
        tid = t.get("id")
        if isinstance(tid, str):
            where = f"types[{i}]({tid})"
        if not isinstance(tid, str) or not _ID_RE.match(tid):
            bad(f"{where}.id", f"type id {tid!r} is missing or not snake_case")
        unknown = set(t) - {"id", "names", "attributes", "related", "prior", "locales_only"}
        if unknown:
            bad(where, f"unknown keys {sorted(unknown)}")
        tnames = t.get("names")
        if not isinstance(tnames, Mapping):
            bad(f"{where}.names", "missing or not a dict language -> list of forms")
        else:
            extra = set(tnames) - set(LANGUAGES)
            if extra:
                bad(f"{where}.names", f"unknown languages {sorted(extra)}")
            for lang in LANGUAGES:
                forms = tnames.get(lang)
                if forms is None:
                    bad(f"{where}.names.{lang}", "missing language")
                    continue
                if not isinstance(forms, (list, tuple)) or not all(
                    isinstance(f, str) and f.strip() for f in forms
                ):
                    bad(f"{where}.names.{lang}", "must be a list of non-empty strings")
                    continue
                distinct = {normalize_form(f) for f in forms}
                if len(distinct) < 2:
                    bad(f"{where}.names.{lang}", f"needs >= 2 distinct surface forms, got {list(forms)}")
        attrs = t.get("attributes", [])
        if not isinstance(attrs, (list, tuple)):
            bad(f"{where}.attributes", "must be a list")
        else:
            unknown_slots = [a for a in attrs if a not in ATTRIBUTE_SLOTS]
            if unknown_slots:
                bad(f"{where}.attributes", f"unknown attribute slots {unknown_slots}")
        rel = t.get("related", {})
        if not isinstance(rel, Mapping):
            bad(f"{where}.related", "must be a dict kind -> list of type ids")
        else:
            for kind, ids in rel.items():
                if kind not in RELATION_KINDS:
                    bad(f"{where}.related", f"unknown relation kind {kind!r} (use {list(RELATION_KINDS)})")
                elif not isinstance(ids, (list, tuple)) or not all(isinstance(x, str) for x in ids):
                    bad(f"{where}.related.{kind}", "must be a list of type ids")
        prior = t.get("prior", 1.0)
        if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not (
            _PRIOR_RANGE[0] <= prior <= _PRIOR_RANGE[1]
        ):
            bad(f"{where}.prior", f"must be a number in [{_PRIOR_RANGE[0]}, {_PRIOR_RANGE[1]}], got {prior!r}")
        only = t.get("locales_only")
        if only is not None:
            if not isinstance(only, (list, tuple)) or not only:
                bad(f"{where}.locales_only", "must be None or a non-empty list of locales")
            else:
                unknown_loc = [x for x in only if x not in LOCALES]
                if unknown_loc:
                    bad(f"{where}.locales_only", f"unknown locales {unknown_loc} (known: {list(LOCALES)})")


def _check_groups(groups: Any, type_ids: list[Any], bad: Callable[[str | None, str], None]) -> None:
    """The optional ``groups`` of a department: group id -> at least two of its type ids, each
    type in one group at most."""
    if groups is None:
        return
    if not isinstance(groups, Mapping):
        bad("groups", "must be a dict group id -> list of type ids")
        return
    owner: dict[str, str] = {}
    for gid, members in groups.items():
        where = f"groups.{gid}"
        if not isinstance(gid, str) or not _ID_RE.match(gid):
            bad(where, f"group id {gid!r} is not snake_case")
        if not isinstance(members, (list, tuple)) or not all(isinstance(m, str) for m in members):
            bad(where, "must be a list of type ids")
            continue
        if len(set(members)) < 2:
            bad(where, f"a group needs >= 2 types, got {list(members)}")
        for m in members:
            if m not in type_ids:
                bad(where, f"{m!r} is not a type of this department")
            elif m in owner and owner[m] != gid:
                bad(where, f"{m!r} is already in group {owner[m]!r}")
            owner.setdefault(m, gid)


def build_taxonomy(departments: Sequence[tuple[str, Any]]) -> Taxonomy:
    """Validate ``(source, DEPARTMENT)`` pairs and build a :class:`Taxonomy`.

    Raises :class:`DataError` listing every problem (format, duplicate ids across
    departments, related ids that do not resolve).
    """
    problems: list[Problem] = []
    for source, dep in departments:
        _check_department(dep, source, problems)
    if problems:
        raise DataError(f"invalid product-type taxonomy ({len(problems)} problems)", problems)

    if not departments:
        raise DataError("the product-type taxonomy is empty: no dNN_*.py department modules found")

    dep_seen: dict[str, str] = {}
    type_seen: dict[str, str] = {}
    for source, dep in departments:
        if dep["id"] in dep_seen:
            problems.append(
                Problem(source, None, "id", f"department id {dep['id']!r} already defined in {dep_seen[dep['id']]}")
            )
        dep_seen.setdefault(dep["id"], source)
        for i, t in enumerate(dep["types"]):
            if t["id"] in type_seen:
                problems.append(
                    Problem(
                        source,
                        None,
                        f"types[{i}]({t['id']}).id",
                        f"duplicate type id {t['id']!r} (first defined in {type_seen[t['id']]})",
                    )
                )
            type_seen.setdefault(t["id"], source)
    for source, dep in departments:
        for i, t in enumerate(dep["types"]):
            for kind, ids in (t.get("related") or {}).items():
                for rid in ids:
                    if rid not in type_seen:
                        problems.append(
                            Problem(source, None, f"types[{i}]({t['id']}).related.{kind}", f"unknown type id {rid!r}")
                        )
                    elif rid == t["id"]:
                        problems.append(
                            Problem(source, None, f"types[{i}]({t['id']}).related.{kind}", "a type cannot relate to itself")
                        )
    group_seen: dict[str, str] = {}
    for source, dep in departments:
        for gid in dep.get("groups") or {}:
            if gid in type_seen or gid in dep_seen:
                problems.append(Problem(source, None, f"groups.{gid}",
                                        f"group id {gid!r} is also a type or department id"))
            elif gid in group_seen:
                problems.append(Problem(source, None, f"groups.{gid}",
                                        f"duplicate group id {gid!r} (first defined in {group_seen[gid]})"))
            group_seen.setdefault(gid, source)
    if problems:
        raise DataError(f"invalid product-type taxonomy ({len(problems)} problems)", problems)

    deps: dict[str, Department] = {}
    types: dict[str, ProductType] = {}
    lookup: dict[str, dict[str, list[str]]] = {lang: {} for lang in LANGUAGES}
    for source, dep in departments:
        ids = []
        groups = {gid: tuple(dict.fromkeys(members)) for gid, members in (dep.get("groups") or {}).items()}
        group_of = {m: gid for gid, members in groups.items() for m in members}
        for t in dep["types"]:
            names: dict[str, tuple[str, ...]] = {}
            for lang in LANGUAGES:
                forms: list[str] = []
                for f in t["names"][lang]:
                    nf = normalize_form(f)
                    if nf not in forms:
                        forms.append(nf)
                names[lang] = tuple(forms)
                for nf in forms:
                    bucket = lookup[lang].setdefault(nf, [])
                    if t["id"] not in bucket:
                        bucket.append(t["id"])
            related = {
                kind: tuple(dict.fromkeys((t.get("related") or {}).get(kind, ()))) for kind in RELATION_KINDS
            }
            only = t.get("locales_only")
            types[t["id"]] = ProductType(
                id=t["id"],
                department=dep["id"],
                names=MappingProxyType(names),
                attributes=tuple(dict.fromkeys(t.get("attributes") or ())),
                related=MappingProxyType(related),
                prior=float(t.get("prior", 1.0)),
                locales_only=tuple(only) if only is not None else None,
                group=group_of.get(t["id"]),
            )
            ids.append(t["id"])
        deps[dep["id"]] = Department(
            id=dep["id"],
            names=MappingProxyType({lang: dep["name"][lang].strip() for lang in LANGUAGES}),
            type_ids=tuple(ids),
            source=source,
            groups=MappingProxyType(groups),
        )
    frozen_lookup = {lang: MappingProxyType({k: tuple(v) for k, v in d.items()}) for lang, d in lookup.items()}
    return Taxonomy(MappingProxyType(deps), MappingProxyType(types), MappingProxyType(frozen_lookup))


def _department_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("d[0-9][0-9]_*.py") if _MODULE_RE.match(p.stem))


def _load_module_dict(path: Path) -> Any:
    """Execute one department module in isolation and return its DEPARTMENT."""
    spec = importlib.util.spec_from_file_location(f"_q2pt_taxonomy_{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - defensive
        raise DataError(f"cannot load taxonomy module {path}", [Problem(str(path), None, None, "not loadable")])
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken data file: report, do not crash with a traceback
        raise DataError(
            f"taxonomy module {path.name} cannot be imported",
            [Problem(path.name, None, None, f"{type(exc).__name__}: {exc}")],
        ) from exc
    if not hasattr(module, "DEPARTMENT"):
        raise DataError(
            f"taxonomy module {path.name} has no DEPARTMENT",
            [Problem(path.name, None, "DEPARTMENT", "missing module-level DEPARTMENT dict")],
        )
    return module.DEPARTMENT


def load_taxonomy(directory: str | Path | None = None) -> Taxonomy:
    """Discover, validate and return the taxonomy.

    ``directory`` defaults to this package (the built-in departments); pass another
    folder of ``dNN_<id>.py`` modules to load a custom taxonomy. The built-in one is
    cached, so repeated calls are free.
    """
    if directory is None:
        return _load_builtin()
    return _load_dir(Path(directory))


def _load_dir(directory: Path) -> Taxonomy:
    if not directory.is_dir():
        raise DataError(f"taxonomy folder not found: {directory}")
    files = _department_files(directory)
    return build_taxonomy([(p.name, _load_module_dict(p)) for p in files])


@lru_cache(maxsize=1)
def _load_builtin() -> Taxonomy:
    return _load_dir(Path(__file__).resolve().parent)


