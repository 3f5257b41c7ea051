"""Loader settings: trainer=gpu gives every classification dataset workers from the job's CPUs,
pinned memory, persistent workers and prefetch; image_cache=true reaches every dataset of a run."""
from __future__ import annotations

import os

from hydra.utils import instantiate
from omegaconf import OmegaConf

from deltapatch.data import DigitsDataModule
from deltapatch.resolvers import job_cpus, loader_workers


def test_cpus_from_slurm_else_affinity(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert job_cpus() == 6 and loader_workers() == 5 and loader_workers(2) == 4
    assert OmegaConf.create({"w": "${dp.workers:}", "c": "${dp.cpus:}"}) == {"w": 5, "c": 6}
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert loader_workers() == 0  # never negative
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert job_cpus() == len(os.sched_getaffinity(0))


def test_gpu_trainer_sets_loader_defaults(make_cfg, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "10")
    cpu = make_cfg()
    assert (cpu.dataset.num_workers, cpu.dataset.pin_memory) == (0, False)
    for trainer in ("gpu", "ddp"):  # ddp builds on gpu
        cfg = make_cfg(f"trainer={trainer}")
        assert cfg.dataset.num_workers == 9 and cfg.dataset.pin_memory
        assert cfg.dataset.persistent_workers and cfg.dataset.prefetch_factor == 4
    dm = instantiate(make_cfg("trainer=gpu").dataset)
    assert dm.loader_kwargs() == {"num_workers": 9, "pin_memory": True, "persistent_workers": True,
                                  "prefetch_factor": 4, "multiprocessing_context": None}
    assert make_cfg("trainer=gpu", "loader.num_workers=3").dataset.num_workers == 3  # one override for all
    assert make_cfg("trainer=gpu", "loader=cpu").dataset.num_workers == 0


def test_image_cache_reaches_every_dataset_of_a_run(make_cfg):
    # table3: three task datasets and the ImageNet base, each in a node of its own
    cfg = make_cfg("experiment=table3", "image_cache=true", fast=False)
    nodes = [cfg.dataset, cfg.base.dataset, *(t.dataset for t in cfg.scenario.tasks.values())]
    assert len(nodes) == 5
    for node in nodes:
        assert node.image_cache is True
        assert node.image_cache_dir == f"{cfg.paths.cache_dir}/images"
    assert make_cfg().dataset.image_cache is False
    assert "image_cache" not in make_cfg("dataset=voc_detection", "scenario=detection").dataset  # dense: untouched


def test_loader_kwargs_follow_the_settings():
    dm = DigitsDataModule(num_workers=2, pin_memory=True, prefetch_factor=3, batch_size=16)
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.pin_memory and loader.persistent_workers
    assert loader.prefetch_factor == 3
    plain = DigitsDataModule(persistent_workers=True)  # asked for, but no workers to keep
    assert plain.loader_kwargs() == {"num_workers": 0, "pin_memory": False, "persistent_workers": False,
                                     "multiprocessing_context": None}


def test_workers_of_a_ddp_rank_start_from_a_forkserver(tmp_path):
    """In a torch.distributed process the loaders' workers come from a forkserver (a rank's threads
    make fork unsafe), outside it from torch's default; both serve the same batches."""
    import torch
    import torch.distributed as dist

    def batches(dm):
        loader = dm.train_dataloader()
        return loader.multiprocessing_context, [(x.clone(), y.clone()) for x, y in loader]

    dm = DigitsDataModule(num_workers=1, batch_size=64, persistent_workers=False)
    plain_ctx, plain = batches(dm)
    assert plain_ctx is None
    assert DigitsDataModule(num_workers=0).train_dataloader().multiprocessing_context is None
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx, served = batches(DigitsDataModule(num_workers=1, batch_size=64, persistent_workers=False))
        assert ctx is not None and ctx.get_start_method() == "forkserver"
        assert DigitsDataModule(num_workers=0).train_dataloader().multiprocessing_context is None
    finally:
        dist.destroy_process_group()
    assert len(served) == len(plain) > 1
    for (x, y), (x0, y0) in zip(served, plain):
        assert torch.equal(x, x0) and torch.equal(y, y0)
