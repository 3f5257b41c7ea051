"""Joint patching: several tasks trained as one, with one head over the union of their classes."""
from __future__ import annotations

from torch.utils.data import ConcatDataset, Dataset

from .base import ClassificationDataModule


class OffsetLabels(Dataset):
    """A dataset whose labels are shifted by ``offset`` (its place in the union of classes)."""

    def __init__(self, dataset: Dataset, offset: int):
        self.dataset, self.offset = dataset, offset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return x, y + self.offset


class JointDataModule(ClassificationDataModule):
    """The union of several task DataModules: task t's class c becomes ``offsets[t] + c``."""

    name = "joint"

    def __init__(self, parts: dict[str, ClassificationDataModule]):
        first = next(iter(parts.values()))
        super().__init__(batch_size=first.batch_size, eval_batch_size=first.eval_batch_size,
                         num_workers=first.num_workers, pin_memory=first.pin_memory, seed=first.seed,
                         persistent_workers=first.persistent_workers, prefetch_factor=first.prefetch_factor,
                         image_cache=first.image_cache)  # the image cache: each part's own, concatenated
        self.parts = parts
        self.offsets: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        offset, names = 0, []
        for key, dm in self.parts.items():
            dm.setup()
            self.offsets[key] = offset
            offset += dm.num_classes
            names += [f"{key}/{c}" for c in dm.class_names]
        self.all_class_names, self.class_ids = names, list(range(len(names)))
        self.splits = {
            split: ConcatDataset([OffsetLabels(dm.splits[split], self.offsets[k]) for k, dm in self.parts.items()])
            for split in ("train", "val", "test")
        }

    @property
    def deterministic_train_transform(self) -> bool:
        return all(dm.deterministic_train_transform for dm in self.parts.values())
