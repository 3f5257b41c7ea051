"""Backbone names -> which library builds which architecture, decided by the registered adapters.

A name is ``arch`` (``resnet18``), ``library/arch`` (``timm/resnet50d``, ``torchvision/resnet18``,
``tv/resnet18``) or a timm name with its weights tag (``resnet50.a1_in1k``). Whether an
architecture is supported is decided by its model class (the return annotation of the library's
builder, which timm and torchvision both write; the built model's class when there is none),
so there is no list of names to keep.
"""
from __future__ import annotations

import difflib
import typing
from functools import lru_cache

import timm
import torchvision

from ..errors import ConfigError
from .base import UnsupportedBackboneError, adapter_class, registered_adapters, supported_families

SOURCES = ("torchvision", "timm")
ALIASES = {"tv": "torchvision"}
SMALL_INPUT_SUFFIX = "_small_input"


def exists(source: str, arch: str) -> bool:
    """Whether ``source`` has a model called ``arch``."""
    if source == "timm":
        return timm.is_model(arch)
    return arch in _torchvision_names()


@lru_cache(maxsize=None)
def _torchvision_names() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))  # classification models


@lru_cache(maxsize=None)
def builder_class(source: str, arch: str) -> type | None:
    """The class ``source``'s builder of ``arch`` returns, read from its return annotation (no
    model is built); None when the builder is not annotated."""
    if source == "timm":
        fn = timm.models.model_entrypoint(arch)
    else:
        fn = torchvision.models.get_model_builder(arch)
    try:
        ann = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that does not resolve: decide on the built model instead
        return None
    return ann if isinstance(ann, type) else None


def is_supported(source: str, arch: str) -> bool | None:
    """True/False when the builder's class says so; None when only building the model can tell."""
    cls = builder_class(source, arch)
    if cls is None:
        return _in_family_module(source, arch) or None
    return adapter_class(cls) is not None


def _in_family_module(source: str, arch: str) -> bool:
    """timm models without a return annotation count when they live in a family's module."""
    if source != "timm":
        return False
    return any(arch in _timm_module_names(t.__module__) for c in registered_adapters() for t in c.model_types
               if t.__module__.startswith("timm."))


@lru_cache(maxsize=None)
def _timm_module_names(module: str) -> frozenset[str]:
    return frozenset(timm.list_models(module=module.rsplit(".", 1)[-1]))


def default_source(arch: str) -> str | None:
    """The library an unprefixed ``arch`` comes from: torchvision when its builder makes a supported
    class (the paper uses the official PyTorch ResNets), else timm, else whichever has the name."""
    for source in SOURCES:
        if exists(source, arch) and is_supported(source, arch):
            return source
    for source in ("timm", "torchvision"):
        if exists(source, arch):
            return source
    return None


def parse_name(name: str, source: str | None = None) -> tuple[str, str, str | None]:
    """``name`` -> (library, architecture, timm weights tag or None), checked to exist and to be
    of a supported family. A ``library/`` prefix in the name decides; otherwise ``source`` is the
    library tried first (the other one when it lacks a supported ``arch``), and without it
    :func:`default_source` decides."""
    prefix, _, rest = str(name).rpartition("/")
    arch, _, tag = rest.partition(".")
    if prefix:
        candidates = [_library(prefix, name)]
        if tag and candidates[0] == "torchvision":
            raise ConfigError(f"'{name}': torchvision names have no '.tag' (torchvision picks its default weights)")
    elif tag:
        candidates = ["timm"]  # only timm spells weights as "arch.tag"
    elif source is not None:
        first = _library(source, name)
        candidates = [first, *(s for s in SOURCES if s != first)]
    else:
        candidates = [s for s in [default_source(arch)] if s is not None]
    have = [s for s in candidates if exists(s, arch)]
    if not have:
        other = next((s for s in SOURCES if s not in candidates and exists(s, arch)), None)
        raise ConfigError(f"{candidates[0]} has no model '{arch}'; {other} has it: {other}/{arch}" if other
                          else _unknown(name))
    chosen = next((s for s in have if is_supported(s, arch) is not False), have[0])
    if is_supported(chosen, arch) is False:
        cls = builder_class(chosen, arch)
        other = next((s for s in SOURCES if s != chosen and exists(s, arch) and is_supported(s, arch)), None)
        hint = f"; use {other}/{arch}" if other else ""
        raise UnsupportedBackboneError(
            f"backbone '{name}' is a {cls.__module__}.{cls.__name__}, which deltapatch cannot patch{hint}; "
            f"supported: {supported_families()}"
        )
    return chosen, arch, tag or None


def _library(spelling: str, name: str) -> str:
    library = ALIASES.get(spelling, spelling)
    if library not in SOURCES:
        raise ConfigError(f"unknown backbone library '{spelling}' for '{name}'; use timm or torchvision")
    return library


def _unknown(name: str) -> str:
    archs = sorted({n.split("/")[1] for n in available_backbones()})
    close = difflib.get_close_matches(str(name).rpartition("/")[2], archs, n=4, cutoff=0.75)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"unknown backbone '{name}'{hint}; known: every timm and torchvision model of a supported family, "
            f"e.g. {', '.join(_examples())} — {supported_families()}")


def _examples() -> list[str]:
    out: list[str] = []
    for names in backbone_families().values():
        out += [n.split("/")[1] for n in sorted(names, key=lambda n: (len(n), n))[:2]]
    return list(dict.fromkeys(out))


def config_name(name: str, source: str | None = None, small_input: bool = False) -> str:
    """The short name configs, results.json and cache keys use: the architecture (with its timm
    tag) when ``source`` is the library an unprefixed name would pick, else ``<library>_<arch>``
    (``timm/resnet18`` -> ``timm_resnet18``); ``_small_input`` appended for the 32-px stem."""
    src, arch, tag = parse_name(name, source)
    out = arch + (f".{tag}" if tag else "")
    if src != default_source(arch):
        out = f"{src}_{out}"
    return out + (SMALL_INPUT_SUFFIX if small_input else "")


@lru_cache(maxsize=None)
def backbone_families() -> dict[str, tuple[str, ...]]:
    """Supported family -> every ``library/arch`` name of it (timm from ``timm.list_models``)."""
    out: dict[str, tuple[str, ...]] = {}
    for cls in registered_adapters():
        names = set()
        for t in cls.model_types:
            source = t.__module__.split(".")[0]
            if source == "timm":
                candidates = timm.list_models()
            elif source == "torchvision":
                candidates = sorted(_torchvision_names())
            else:
                continue
            for arch in candidates:
                bc = builder_class(source, arch)
                if (bc is not None and issubclass(bc, t)) or (bc is None and source == "timm"
                                                               and arch in _timm_module_names(t.__module__)):
                    names.add(f"{source}/{arch}")
        out[cls.family or cls.__name__] = tuple(sorted(names))
    return out


def available_backbones() -> list[str]:
    """Every name ``create_backbone`` accepts, as ``library/arch`` (timm weights tags aside)."""
    return sorted({n for names in backbone_families().values() for n in names})
