"""Entry point: ``python -m deltapatch.train [group=option ...]`` (``-m`` for multirun).

Configuration lives in ``conf/``; see README. Errors a user can fix are printed as one line
(set ``HYDRA_FULL_ERROR=1`` for the traceback) with a non-zero exit.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .cli import guarded
    from .scenarios import run

    results = guarded(run, cfg)
    return results.get("hmean", results.get("mean"))  # the value a Hydra sweeper would optimise


if __name__ == "__main__":
    import sys

    from .cli import preflight

    sys.argv = sys.argv[:1] + preflight(sys.argv[1:])
    main()
