"""Provenance: the package versions and git commit recorded with every result."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from deltapatch.provenance import PACKAGES, cpu_model, git_commit, software


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
    assert set(found) == {"python", *PACKAGES, "git", "cpu", "cpu_capability"}
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
