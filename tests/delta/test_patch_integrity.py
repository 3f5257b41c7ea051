"""Patch files carry a SHA-256 of their tensors (item 8): bytes changed on disk are refused with one
line instead of scoring 22 % where the patch scored 86 %."""
from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, ROOT, cli_env
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from deltapatch import DeltaNetwork, PatchError, create_backbone, save_patch
from deltapatch.checkpoint import tensors_sha256
from deltapatch.patch import load_patch


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return create_backbone("resnet18", num_classes=5)


def make_patch(base, path: Path) -> Path:
    net = DeltaNetwork(base)
    net.add_task("patch", 3)
    with torch.no_grad():  # not the zero init of a fresh head: bytes that matter
        for p in net.tasks["patch"].parameters():
            p.normal_()
    return save_patch(net, "patch", path)


def overwrite_tensor_bytes(path: Path, n: int = 200_000, offset: int = 1000) -> None:
    """Overwrite ``n`` bytes of tensor data (after the safetensors header) with 0xFF."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0] + offset
    data[start:start + n] = b"\xff" * n
    path.write_bytes(bytes(data))


def test_patch_records_the_hash_of_its_tensors(base, tmp_path):
    path = make_patch(base, tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        recorded = f.metadata()["tensors_sha256"]
    assert recorded == tensors_sha256(load_file(str(path)))


def test_overwritten_tensor_bytes_are_refused(base, tmp_path):
    path = make_patch(base, tmp_path / "p.safetensors")
    assert load_patch(DeltaNetwork(base), path) == "patch"
    overwrite_tensor_bytes(path)
    with pytest.raises(PatchError, match=r"p.safetensors is corrupt: its tensors do not match the SHA-256") as e:
        load_patch(DeltaNetwork(base), path)
    assert "\n" not in str(e.value)
    net = DeltaNetwork(base)  # verify=False: the caller vouches for the file
    assert load_patch(net, path, verify=False) == "patch"
    assert any(torch.isnan(p).any() for p in net.tasks["patch"].parameters())  # what verify keeps out


def test_patch_without_a_hash_loads_with_a_warning(base, tmp_path, caplog):
    path = make_patch(base, tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "tensors_sha256"}
    save_file(load_file(str(path)), str(path), metadata=meta)  # as written before the hash existed
    with caplog.at_level(logging.WARNING, logger="deltapatch"):
        assert load_patch(DeltaNetwork(base), path) == "patch"
    assert "carries no tensor checksum" in caplog.text


def test_corrupt_patch_through_evaluate(tmp_path, base_cache, base):
    path = make_patch(base, tmp_path / "p.safetensors")
    overwrite_tensor_bytes(path)
    p = subprocess.run([sys.executable, "-m", "deltapatch.evaluate", f"patch={path}", f"paths.cache_dir={base_cache}",
                        *[o for o in FAST if o.startswith(("base.", "dataset."))]],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "is corrupt" in lines[0] and "Traceback" not in p.stderr
    assert "task_acc" not in p.stdout  # nothing scored
