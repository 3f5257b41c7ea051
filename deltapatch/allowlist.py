"""What a configuration read from disk (a run folder's ``.hydra/config.yaml``, a stored run config)
may instantiate: Hydra's ``instantiate`` calls whatever ``_target_`` names, so a folder someone
else wrote could otherwise run any function (``{_target_: shutil.copyfile, ...}``).

Allowed, checked on the object a target resolves to (a re-export such as
``deltapatch.checkpoint.os.system`` resolves to ``os.system`` and is refused):

- anything defined under ``deltapatch``;
- optimizers and learning-rate schedulers: classes under ``torch.optim``;
- models: classes under ``torchvision.models`` and ``timm.models``, torchvision's registered model
  builders and ``torchvision.models.get_model``, ``timm.create_model``;
- ``pytorch_lightning`` (or ``lightning.pytorch``) loggers, callbacks and ``Trainer`` classes;
- exact names in ``extra`` or in the ``DELTAPATCH_ALLOWED_TARGETS`` environment variable
  (comma-separated), for a user's own trusted classes.

Names with a private part (``_hub``, ``__builtins__``) are refused. Anything else raises
:class:`UnsafeTargetError` (one line) before anything is instantiated.
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Iterable, Iterator

from .errors import UnsafeTargetError

ENV_VAR = "DELTAPATCH_ALLOWED_TARGETS"

# (name prefix, module prefix the resolved object must come from, kinds allowed: class / function)
_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("deltapatch.", "deltapatch", ("class", "function")),
    ("torch.optim.", "torch.optim", ("class",)),
    ("torchvision.models.", "torchvision.models", ("class", "builder")),
    ("timm.models.", "timm", ("class",)),
    ("pytorch_lightning.loggers.", "pytorch_lightning.loggers", ("class",)),
    ("pytorch_lightning.callbacks.", "pytorch_lightning.callbacks", ("class",)),
    ("lightning.pytorch.loggers.", "lightning.pytorch.loggers", ("class",)),
    ("lightning.pytorch.callbacks.", "lightning.pytorch.callbacks", ("class",)),
)
_EXACT = {"pytorch_lightning.Trainer", "lightning.pytorch.Trainer", "timm.create_model",
          "torchvision.models.get_model"}


def targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(key path, _target_ value)`` in a plain container (dicts and lists, any depth)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield (where or "<root>"), node["_target_"]
        for k, v in node.items():
            yield from targets(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from targets(v, f"{where}[{i}]")


def _locate(name: str) -> Any:
    """The object ``name`` denotes: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def _kind(obj: Any, name: str) -> str | None:
    if isinstance(obj, type):
        return "class"
    if name.startswith("torchvision.models."):
        from torchvision import models

        builders = {models.get_model_builder(m) for m in models.list_models()}
        return "builder" if obj in builders else None
    if callable(obj) and hasattr(obj, "__code__"):
        return "function"
    return None


def why_refused(name: Any, extra: Iterable[str] = ()) -> str | None:
    """``None`` when ``name`` may be instantiated; otherwise the reason it may not."""
    if not isinstance(name, str) or not name:
        return "not a dotted name"
    allowed_exact = set(extra) | {n.strip() for n in os.environ.get(ENV_VAR, "").split(",") if n.strip()}
    if name in allowed_exact:
        return None
    if any(part.startswith("_") or not part.isidentifier() for part in name.split(".")):
        return "private or malformed name"
    rules = [r for r in _RULES if name.startswith(r[0])]
    if not rules and name not in _EXACT:
        return "outside the allow-list"
    try:
        obj = _locate(name)
    except (ImportError, AttributeError):
        return "does not exist"
    if name in _EXACT:
        return None
    module = getattr(obj, "__module__", None) or ""
    kind = _kind(obj, name)
    for _, mod_prefix, kinds in rules:
        if (module == mod_prefix or module.startswith(mod_prefix + ".")) and kind in kinds:
            return None
    return f"resolves to {module}.{getattr(obj, '__name__', '?')}, outside the allow-list"


def check_targets(config: Any, source: str, extra: Iterable[str] = ()) -> None:
    """Refuse ``config`` (a DictConfig or plain container) read from ``source`` when any
    ``_target_`` in it is outside the allow-list; nothing is instantiated or imported beyond the
    allowed packages."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(config, (DictConfig, ListConfig)):
            try:
                config = OmegaConf.to_container(config, resolve=True)
            except Exception:  # interpolations into Hydra's runtime: check the raw values
                config = OmegaConf.to_container(config, resolve=False)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    extra = tuple(extra)
    for where, name in targets(config):
        reason = why_refused(name, extra)
        if reason is not None:
            raise UnsafeTargetError(
                f"{source}: refusing to instantiate {where}._target_={name!r} ({reason}); only deltapatch, "
                f"torch.optim, torchvision/timm models and Lightning loggers/callbacks/Trainer are instantiated "
                f"from files (add trusted names to {ENV_VAR})")


__all__ = ["ENV_VAR", "UnsafeTargetError", "check_targets", "targets", "why_refused"]
