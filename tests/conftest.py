"""Shared fixtures: compose the real Hydra configs with small, fast overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from deltapatch.cli import allow_numeric_group_choices

from helpers import CONF, FAST  # noqa: E402

allow_numeric_group_choices()  # n_deltas=4 picks conf/n_deltas/4.yaml, as in the entry points


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory) -> Path:
    """One base-model cache for the whole session, so the base is trained once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(tmp_path, base_cache):
    """``make_cfg(*overrides)`` -> a composed config writing into ``tmp_path/run``."""

    def _make(*overrides: str, fast: bool = True, config_name: str = "config"):
        ov = [f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={base_cache}", *(FAST if fast else []),
              *overrides]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name, overrides=ov)

    return _make
