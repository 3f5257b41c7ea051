"""Shared fixtures: compose the real Hydra configs with small, fast overrides."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from deltapatch.cli import allow_numeric_group_choices

from helpers import CONF, FAST  # noqa: E402

allow_numeric_group_choices()  # n_deltas=4 picks conf/n_deltas/4.yaml, as in the entry points

# The slowest modules first: under pytest-xdist (`make test`, --dist loadfile) a module is handed
# to a worker in collection order, so starting these first keeps both workers busy to the end.
SLOW_FIRST = ("test_presets_rehearsal.py", "test_ddp.py", "test_bench.py", "test_resume.py", "test_adda.py")


def pytest_configure(config) -> None:
    # Under pytest-xdist each worker stands for one core: one thread per worker, and for the
    # processes it launches (they inherit the environment); two workers of two threads each would
    # oversubscribe a 2-core machine.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: file order kept otherwise


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
