"""Scenarios: one runner per kind of experiment, each a function ``run(cfg) -> results``.

- :mod:`.classification` — single, joint and sequential patching (paper Section 3.1)
- :mod:`.transfer` — transfer learning at sample rates and from scratch (Table 5, Tables 12-13)
- :mod:`.zsda` — zero-shot domain adaptation (Table 6)
- :mod:`.detection`, :mod:`.segmentation` — Faster R-CNN and DeepLabV3 on a ∆-patched body (Table 7)

Every ``conf/scenario/<name>.yaml`` names its runner (``runner._target_``); :func:`run` checks the
configuration, the folders it writes and the data it reads (:mod:`.preflight`), then dispatches.
:mod:`.common` holds what they share.
"""
from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from ..errors import ConfigError


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg`` with the runner its scenario names; return its results. Everything
    :func:`.preflight.preflight` can find wrong is refused (one line) before anything trains."""
    from .preflight import preflight

    runner = cfg.scenario.get("runner")
    if runner is None:
        raise ConfigError(f"scenario '{cfg.scenario.get('name')}' names no runner: add "
                          f"runner: {{_target_: <module>.run}} to its conf/scenario YAML")
    preflight(cfg)
    return instantiate(runner, _partial_=True)(cfg)
