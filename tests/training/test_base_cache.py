"""The cache of trained base models, as a team sharing a cluster file system uses it: a corrupt
entry is rebuilt (warned), concurrent runs wait for one builder, a killed build continues where it
stopped, files follow the umask."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from filelock import FileLock
from helpers import ROOT, cli_env, state_hash

from deltapatch.checkpoint import write_checked, write_json
from deltapatch.scenarios import run
from deltapatch.training import base_model
from deltapatch.training.base_model import base_cache_key, obtain_base, partial_dir


def cache_file(cfg) -> Path:
    return Path(cfg.base.cache_dir) / f"{cfg.backbone.name}-{base_cache_key(cfg)}.safetensors"


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_cached_base_is_rebuilt(make_cfg, tmp_path, caplog, damage):
    """Item 4: `head -c 1000000 entry > entry` used to fail every later run (exit 2) until someone
    deleted the file. Now it is rebuilt, with a warning, to the same weights (training is
    deterministic)."""
    cfg = make_cfg(f"paths.cache_dir={tmp_path / 'cache'}")
    first = obtain_base(cfg)
    path = cache_file(cfg)
    assert first.cache_path == path
    data = path.read_bytes()
    path.write_bytes(data[:1_000_000] if damage == "truncated" else data[:-200_000] + b"\xff" * 200_000)
    with caplog.at_level(logging.WARNING, logger="deltapatch"):
        again = obtain_base(cfg)
    assert f"rebuilding unusable cached model {path}" in caplog.text
    assert state_hash(again.model) == state_hash(first.model)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="deltapatch"):
        obtain_base(cfg)  # the rebuilt entry is used as it is
    assert "model from cache" in caplog.text and "rebuilding" not in caplog.text


class Killed(Exception):
    """What a job's time limit does to a build."""


class EpochWatch(pl.Callback):
    """Records the epochs a build trains; raises :class:`Killed` as epoch ``kill_at`` starts (after
    the previous epoch's checkpoint was written)."""

    def __init__(self, kill_at: int | None = None):
        self.kill_at, self.epochs = kill_at, []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.kill_at:
            raise Killed
        self.epochs.append(trainer.current_epoch)


def watch_builds(monkeypatch, watch: EpochWatch) -> None:
    make = base_model.make_trainer
    monkeypatch.setattr(base_model, "make_trainer",
                        lambda *a, callbacks=(), **k: make(*a, callbacks=[*callbacks, watch], **k))


def test_killed_base_build_continues_to_the_uninterrupted_weights(make_cfg, tmp_path, monkeypatch, caplog):
    """A ConvNeXt base takes longer on 2 CPU cores than a session, and a cluster job can be
    pre-empted: a killed build used to start again from epoch 0. It now trains only the epochs
    left, from the last epoch-end checkpoint, and ends on the weights of an uninterrupted build."""
    recipe = ("base.epochs=3", "base.limit_train_batches=3", "trainer.limit_val_batches=1")
    whole_cfg = make_cfg(f"paths.cache_dir={tmp_path / 'whole'}", *recipe)
    whole = obtain_base(whole_cfg)
    cfg = make_cfg(f"paths.cache_dir={tmp_path / 'killed'}", *recipe)
    path = cache_file(cfg)

    killer = EpochWatch(kill_at=2)
    watch_builds(monkeypatch, killer)
    with pytest.raises(Killed):
        obtain_base(cfg)
    assert killer.epochs == [0, 1] and not path.exists()
    assert (partial_dir(path) / "last.ckpt").is_file()

    monkeypatch.undo()
    watch = EpochWatch()
    watch_builds(monkeypatch, watch)
    with caplog.at_level(logging.INFO, logger="deltapatch"):
        resumed = obtain_base(cfg)
    assert watch.epochs == [2]  # only the epoch left
    assert f"continuing the build in {partial_dir(path)}" in caplog.text
    assert state_hash(resumed.model) == state_hash(whole.model)
    assert not partial_dir(path).exists()  # the entry is written: its build state is gone
    assert json.loads(path.with_suffix(".json").read_text())["resumed"] is True
    assert "resumed" not in json.loads(cache_file(whole_cfg).with_suffix(".json").read_text())


BUILD = """
import logging, sys
from hydra import compose, initialize_config_dir
from helpers import CONF, state_hash
from deltapatch.training.base_model import obtain_base
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[1:])
print(state_hash(obtain_base(cfg).model))
"""


def test_concurrent_runs_wait_for_one_builder(tmp_path, make_cfg):
    """Item 9: two runs needing the same new base used to both train it. Here both start while
    the cache is locked (as by a third builder), both wait; then exactly one builds and the
    other reads its file."""
    overrides = [f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}", "base.epochs=1", "base.limit_train_batches=3",
                 "dataset.batch_size=32", "trainer.enable_progress_bar=false"]
    path = cache_file(make_cfg(*overrides))
    path.parent.mkdir(parents=True)
    env = cli_env(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    lock = FileLock(f"{path}.lock")
    lock.acquire()
    procs, logs = [], []
    try:
        for i in range(2):
            logs.append(tmp_path / f"run{i}.log")
            procs.append(subprocess.Popen([sys.executable, "-c", BUILD, *overrides], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=logs[-1].open("w"), text=True))
        deadline = time.time() + 300
        while not all("waiting for another run building" in f.read_text() for f in logs):
            assert time.time() < deadline and all(p.poll() is None for p in procs), [f.read_text()[-2000:] for f in logs]
            time.sleep(0.2)
    finally:
        lock.release()
    hashes = [p.communicate(timeout=600)[0].strip().splitlines()[-1:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [f.read_text()[-2000:] for f in logs]
    texts = [f.read_text() for f in logs]
    assert sum("to be cached at" in t for t in texts) == 1  # one builder
    assert sum("model from cache" in t for t in texts) == 1  # the other read its file
    assert hashes[0] == hashes[1]


def modes(*folders: Path) -> dict[str, int]:
    return {str(f): stat.S_IMODE(f.stat().st_mode) for d in folders for f in d.rglob("*") if f.is_file()}


def test_files_follow_the_umask(make_cfg, tmp_path):
    """Item 9: everything was written 0600 (mkstemp), so colleagues sharing a cache could not read
    it. A run under umask 027 writes 0640 everywhere: the base cache, its lock, the run's files."""
    old = os.umask(0o027)
    try:
        res = run(make_cfg(f"paths.cache_dir={tmp_path / 'cache'}"))
    finally:
        os.umask(old)
    found = modes(tmp_path / "cache", Path(res["patch_files"]["patch"]["path"]).parents[1])
    assert any(k.endswith(".safetensors.lock") for k in found) and any(k.endswith("results.json") for k in found)
    assert {k: v for k, v in found.items() if v != 0o640} == {}


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_checked(tmp_path / "b.ckpt", b"bytes")
    finally:
        os.umask(old)
    assert set(modes(tmp_path).values()) == {mode}
