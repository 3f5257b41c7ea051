"""A CSV logger that appends: Lightning's deletes an existing ``metrics.csv`` whenever its writer is
created, which loses earlier metrics when a run resumes, when a DDP-spawned process recreates the
logger, and when one logger serves several trainers."""
from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from ..checkpoint import atomic_path


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, keeping an existing ``metrics.csv`` (its columns included) and rewriting
    it atomically when new columns appear."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(set(self.metrics_keys) | set(header))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        if not _is_local(self.metrics_file_path):
            return super()._rewrite_with_new_header(fieldnames)
        with atomic_path(self.metrics_file_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(rows)


def _is_local(path: str) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AppendingCSVLogger(CSVLogger):
    """:class:`pytorch_lightning.loggers.CSVLogger` whose ``metrics.csv`` grows across resumes and
    trainers instead of being replaced."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


__all__ = ["AppendingCSVLogger", "AppendingExperimentWriter"]
