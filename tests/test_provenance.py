"""Provenance: the package versions and git commit recorded with every result."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deltapatch.provenance import PACKAGES, cpu_id, cpu_isa, cpu_model, git_commit, software


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_git_commit_names_the_checkout_and_says_when_it_is_dirty(tmp_path):
    assert git_commit(tmp_path) is None  # not a work tree
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head and len(head) == 40
    (repo / "untracked.txt").write_text("not part of the source\n")
    assert git_commit(repo) == head  # untracked files do not make it dirty
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == head + "+dirty"


def test_software_lists_this_process_versions():
    found = software()
    assert set(found) == {"python", *PACKAGES, "git", "cpu", "cpu_id", "cpu_isa", "cpu_capability"}
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))
    assert found["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert all(found[p] for p in PACKAGES)  # all installed here


def test_software_names_the_processor_and_the_kernels_torch_dispatches_to():
    found = software()
    assert found["cpu"] == cpu_model() and found["cpu"]  # a model name, never empty
    # the same instruction set a fresh interpreter reports, and lowering it shows up in the record
    probe = "from deltapatch.provenance import software; print(software()['cpu_capability'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    lowered = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert lowered.stdout.strip() == "DEFAULT"


ZEN2 = "vendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\nstepping\t: 0\nflags\t\t: fpu sse4_2 fma avx avx2\n"
ZEN5 = "vendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse4_2 avx512f fma avx2 avx512_bf16 avx\n"


def test_cpu_id_tells_apart_processors_that_share_a_model_name(tmp_path):
    # two AMD EPYCs with one model name built different ConvNeXt-Tiny weights (docs/real_twins.md)
    zen2, zen5 = tmp_path / "zen2", tmp_path / "zen5"
    zen2.write_text(ZEN2 + "\nprocessor\t: 1\nvendor_id\t: OtherVendor\n")  # the first processor counts
    zen5.write_text(ZEN5)
    assert cpu_id(zen2) == "AuthenticAMD 23/49/0"
    assert cpu_id(zen5) == "AuthenticAMD 26/2/1"
    assert cpu_isa(zen2) == "avx avx2 fma"  # sse4_2 and fpu are not what kernels are picked by
    assert cpu_isa(zen5) == "avx avx2 avx512_bf16 avx512f fma"
    assert cpu_id(tmp_path / "missing") is None and cpu_isa(tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_software_records_this_machines_cpu_id_and_isa():
    found = software()
    vendor = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("vendor_id"))
    assert found["cpu_id"].startswith(vendor + " ") and found["cpu_id"].count("/") == 2
    # torch's capability is one of the processor's extensions (x86 here: AVX2 at least)
    capability = found["cpu_capability"].lower()  # "avx2", or "avx512" for the avx512f family
    assert capability == "default" or any(f.startswith(capability) for f in found["cpu_isa"].split())
