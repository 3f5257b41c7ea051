"""OmegaConf resolvers the configs use, as ``${dp.<name>:...}``; registered on ``import deltapatch``.

- ``${dp.cpus:}``: CPUs this job may use: ``SLURM_CPUS_PER_TASK`` when set (a SLURM job's share of
  a node), else the process's CPU affinity (what ``taskset``, cgroups or a container allow).
- ``${dp.workers:}``: DataLoader workers for one training process: ``dp.cpus`` minus one for the
  process itself (``${dp.workers:2}`` keeps two), at least 0.
"""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def job_cpus() -> int:
    """CPUs available to this job (see the module docstring)."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity call
        return os.cpu_count() or 1


def loader_workers(reserve: int = 1) -> int:
    """DataLoader workers that leave ``reserve`` CPUs to the training process."""
    return max(job_cpus() - int(reserve), 0)


def register() -> None:
    """Register the ``dp.*`` resolvers (idempotent)."""
    OmegaConf.register_new_resolver("dp.cpus", job_cpus, replace=True)
    OmegaConf.register_new_resolver("dp.workers", loader_workers, replace=True)
