"""``deltapatch-train`` / ``python -m deltapatch.train [group=option ...]`` (``-m`` for multirun).

A Hydra app on ``conf/config.yaml``: Hydra's own flags (``--help``, ``--cfg job``, ``--info``, ...)
work as in any Hydra app. Errors a user can fix are printed as one line (set ``HYDRA_FULL_ERROR=1``
for the traceback) with exit code 2. Each run ends with a one-screen summary.
"""
from __future__ import annotations

from omegaconf import DictConfig

from .cli import call_with_argv, guarded, hydra_app


@hydra_app("config")
def _train(cfg: DictConfig) -> float | None:
    from .console import print_run_summary, setup_console
    from .scenarios import run

    setup_console()  # after the imports above: Lightning adds its own log handlers when imported
    results = guarded(run, cfg)
    print_run_summary(results, cfg.paths.output_dir)
    return results.get("hmean", results.get("mean"))  # the value a Hydra sweeper would optimise


def main(argv: list[str] | None = None) -> None:
    """Console script ``deltapatch-train``; ``argv`` defaults to the command line."""
    call_with_argv(_train, argv)


if __name__ == "__main__":
    main()
