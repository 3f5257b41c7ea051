"""Resume: a task killed part-way continues from its last epoch to the numbers of an uninterrupted
run; a resume with another config is refused (``resume=force`` records what changed); checkpoints
hold only what trains, are written atomically, and a truncated or corrupt one restarts its task
with a warning instead of a traceback; a full disk leaves no truncated file under the final name."""
from __future__ import annotations

import csv
import errno
import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, ROOT, cli_env_with_tests

from deltapatch.checkpoint import check_file, sidecar, write_json
from deltapatch.errors import ResourceError, ResumeError
from deltapatch.scenarios import run
from deltapatch.training.checkpointing import FROZEN, AtomicCheckpointIO

METRICS = ("base_acc_before", "base_acc_after", "tasks", "hmean", "mean", "val", "tasks_when_trained",
           "trainable_params", "extra")


def metrics(res: dict) -> dict:
    return {k: res.get(k) for k in METRICS}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deltapatch.train", *args], cwd=ROOT, env=cli_env_with_tests(),
                          capture_output=True, text=True, timeout=900)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------- kill -9 in the middle of a task
def test_kill_mid_task_resumes_from_its_last_epoch(tmp_path, base_cache):
    """Item 2: SIGKILL after epoch 1 of 3 of the second task; the rerun continues that task at
    epoch 2 (its metrics are appended, not redone) and ends with the uninterrupted run's numbers."""
    def args(run_dir: Path, marker: Path) -> list[str]:
        return [f"hydra.run.dir={run_dir}", f"paths.cache_dir={base_cache}", "scenario=sequential",
                "trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.enable_progress_bar=false",
                "base.epochs=1", "dataset.batch_size=32", "+callbacks.kill._target_=helpers.KillAt",
                "+callbacks.kill.task=t78", "+callbacks.kill.epoch=1", f"+callbacks.kill.marker={marker}"]

    inert = tmp_path / "never-kill"
    inert.touch()
    ref = cli(*args(tmp_path / "ref", inert))
    assert ref.returncode == 0, ref.stderr[-3000:]
    # every epoch writes last.ckpt; saying weights_only=False keeps Lightning's line-per-save out of the log
    assert "`weights_only` was not set" not in ref.stdout + ref.stderr

    run_dir, marker = tmp_path / "killed", tmp_path / "kill-once"
    p = cli(*args(run_dir, marker))
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "t78" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0  # t78's first epoch is on disk
    assert list(json.loads((run_dir / "progress.json").read_text())["tasks"]) == ["t56"]
    assert not (run_dir / "results.json").exists()

    p = cli(*args(run_dir, marker))  # the same command: resume=auto
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = json.loads((run_dir / "results.json").read_text())
    assert metrics(resumed) == metrics(json.loads((tmp_path / "ref" / "results.json").read_text()))
    assert resumed["resume"] == {"finished_tasks_restored": ["t56"], "forced": False, "changed": {}}
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    epochs = {t: [int(float(r["epoch"])) for r in rows if r.get(f"train/{t}/acc")] for t in ("t56", "t78", "t9")}
    # t56's rows survived the resume; t78 ran epochs 0 (killed run), 1 and 2 (resumed), none twice
    assert epochs == {"t56": [0, 1, 2], "t78": [0, 1, 2], "t9": [0, 1, 2]}
    assert not ckpt.exists()  # a finished task's checkpoint is superseded by its snapshot


# ---------------------------------------------------------------- a resume must not mislabel results
def test_resume_with_another_config_is_refused(make_cfg, tmp_path):
    """Item 1: the same run dir with seed=1 used to report seed 1 with the seed-0 numbers."""
    first = run(make_cfg())
    results = Path(first["patch_files"]["patch"]["path"]).parents[1] / "results.json"
    before = results.read_bytes()
    with pytest.raises(ResumeError, match=r"started with another config \(dataset\.seed: 0 -> 1, seed: 0 -> 1\)"):
        run(make_cfg("seed=1"))
    assert results.read_bytes() == before
    # keys that cannot change a number are not compared
    same = run(make_cfg("trainer.log_every_n_steps=1", "checkpoint_every_n_steps=7", "logger=none"))
    assert metrics(same) == metrics(first) and same["resume"]["forced"] is False
    forced = run(make_cfg("seed=1", "resume=force"))
    assert forced["resume"]["forced"] is True and forced["resume"]["changed"]["seed"] == [0, 1]
    assert json.loads(results.read_text())["resume"]["changed"]["seed"] == [0, 1]


def test_resume_refusal_through_the_entry_point(tmp_path, base_cache):
    run_dir = tmp_path / "run"
    common = [f"hydra.run.dir={run_dir}", f"paths.cache_dir={base_cache}", *FAST]
    assert cli(*common).returncode == 0
    results = (run_dir / "results.json").read_bytes()
    line = one_error_line(cli(*common, "seed=1"))
    assert "seed: 0 -> 1" in line and "resume=force" in line
    assert (run_dir / "results.json").read_bytes() == results
    assert "seed: 0" in (run_dir / "run_config.yaml").read_text()  # what the run was started with


# ---------------------------------------------------------------- what a checkpoint holds
def test_checkpoints_hold_only_what_trains(make_cfg, monkeypatch):
    """∆(1) resnet18: last.ckpt holds the task's tensors and AdamW's two moments of each, not the
    45 MB base; after a task only its snapshot remains, under 2x the patch file."""
    import deltapatch.training.progress as progress

    seen = {}
    real_remove = progress.remove_checked

    def keep_then_remove(path):
        if Path(path).exists():
            seen["bytes"] = Path(path).stat().st_size
            seen["ckpt"] = torch.load(path, weights_only=True)
        real_remove(path)

    monkeypatch.setattr(progress, "remove_checked", keep_then_remove)
    res = run(make_cfg("trainer.max_epochs=2"))
    out = Path(res["patch_files"]["patch"]["path"]).parents[1]
    patch_bytes = res["patch_files"]["patch"]["bytes"]
    ckpt = seen["ckpt"]
    assert ckpt["epoch"] == 1 and ckpt["state_dict"]
    assert all(k.startswith("method.net.tasks.patch.") for k in ckpt["state_dict"])
    assert any(".base." in k for k in ckpt[FROZEN]["keys"])
    moments = [t for s in ckpt["optimizer_states"][0]["state"].values() for t in s.values() if t.dim() > 0]
    assert sum(t.numel() for t in moments) == 2 * res["trainable_params"]["patch"]
    assert seen["bytes"] < 3.2 * patch_bytes  # parameters + two moments, no base
    on_disk = sum(f.stat().st_size for d in ("state", "checkpoints") for f in (out / d).rglob("*") if f.is_file())
    assert on_disk < 2 * patch_bytes


def test_checkpoint_every_n_steps(make_cfg, monkeypatch):
    saved = []
    real = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        saved.append((Path(path).parent.name, checkpoint["global_step"]))
        return real(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    run(make_cfg("trainer.max_epochs=2", "checkpoint_every_n_steps=2"))
    # 3 steps per epoch: step checkpoints at 2 and 4, epoch ends at 3 and 6
    assert saved == [("patch", 2), ("patch", 3), ("patch", 4), ("patch", 6)]


# ---------------------------------------------------------------- truncated or corrupt last.ckpt
def _crash_cfg(make_cfg, marker: Path, *extra: str):
    # augmentation draws from the global generator: the resumed epoch must draw what it would have
    return make_cfg("trainer.max_epochs=2", "+dataset.augment=true", "+callbacks.crash._target_=helpers.CrashAt",
                    "+callbacks.crash.task=patch",
                    "+callbacks.crash.epoch=1", f"+callbacks.crash.marker={marker}", *extra)


@pytest.mark.parametrize("damage", ["none", "truncated", "flipped", "truncated_without_checksum"])
def test_damaged_checkpoint_restarts_its_task(make_cfg, tmp_path, caplog, damage):
    """Item 3: a truncated or corrupt last.ckpt used to end every resume in a PytorchStreamReader
    traceback. Now the task restarts from its start (warned) and gives the uninterrupted numbers;
    an intact checkpoint resumes to the same numbers."""
    inert = tmp_path / "inert"
    inert.touch()
    ref = run(_crash_cfg(make_cfg, inert, f"paths.output_dir={tmp_path / 'ref'}"))

    marker = tmp_path / "crash-once"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(_crash_cfg(make_cfg, marker))
    ckpt = tmp_path / "run" / "checkpoints" / "patch" / "last.ckpt"
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        ckpt.write_bytes(data[:4000] + b"\xff" * 1000 + data[5000:])
    elif damage == "truncated_without_checksum":
        sidecar(ckpt).unlink()
        ckpt.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="deltapatch"):
        res = run(_crash_cfg(make_cfg, marker))
    assert metrics(res) == metrics(ref)
    if damage == "none":
        assert "resuming from" in caplog.text and "unusable" not in caplog.text
    else:
        assert f"checkpoint {ckpt} is unusable" in caplog.text and "restarts from its start" in caplog.text
        assert ckpt.with_name("last.ckpt.corrupt").exists()


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs where the tests run as root and may mount; else ``None`` (mocked ENOSPC)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None:
        yield None
        return
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if p.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("how", ["tmpfs", "mocked"])
def test_disk_full_leaves_no_truncated_file(tiny_disk, tmp_path, monkeypatch, how):
    """Item 3: Lightning wrote in /tmp and copied, so a full disk left a truncated last.ckpt under
    its final name. Here the old checkpoint stays intact, no temp file is left, one line is raised."""
    if how == "tmpfs" and tiny_disk is None:
        pytest.skip("no small tmpfs here (not root, or mount refused): the mocked case covers it")
    folder = tiny_disk if how == "tmpfs" else tmp_path / "mocked"
    folder.mkdir(exist_ok=True)
    path = folder / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(10)}, "loops": {}}, path)
    old = path.read_bytes()
    big = {"state_dict": {"w": torch.randn(200_000)}, "loops": {}}  # 800 KB: more than the disk holds
    if how == "mocked":  # the write fails part-way, as on a full disk
        import deltapatch.checkpoint as checkpoint

        real_open = open

        class Full:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(checkpoint, "open", lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k))
                            if mode == "wb" else real_open(p, mode, *a, **k), raising=False)
    with pytest.raises(ResourceError, match="no space left on the file system of"):
        io.save_checkpoint(big, path)
    assert path.read_bytes() == old and check_file(path) is None  # the old checkpoint, intact
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "last.ckpt.sha256.json"]  # no temp file
    if how == "tmpfs":
        with pytest.raises(ResourceError):
            write_json(folder / "results.json", {"x": "y" * 400_000})
        assert not (folder / "results.json").exists()


# ---------------------------------------------------------------- loggers append
def test_csv_logger_appends(tmp_path):
    """Lightning's CSV writer deletes an existing metrics.csv when created: on resume, in a
    ddp_spawn child, or for a second trainer of a run. This one appends (new columns included)."""
    from deltapatch.training.loggers import AppendingCSVLogger

    first = AppendingCSVLogger(save_dir=str(tmp_path), name="csv", version="")
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = AppendingCSVLogger(save_dir=str(tmp_path), name="csv", version="")  # as after a restart
    second.log_metrics({"a": 2.0}, step=1)
    second.log_metrics({"b": 3.0}, step=2)
    second.save()
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", ""), ("1", "2.0", ""), ("2", "", "3.0")]
