"""One LightningDataModule per dataset, all sharing :class:`ClassificationDataModule`."""
from .base import ClassificationDataModule, DatasetNotFoundError, TaskDataset
from .digits import DigitsDataModule
from .mnist_like import FashionMNISTDataModule, MNISTDataModule

__all__ = ["ClassificationDataModule", "DatasetNotFoundError", "DigitsDataModule", "FashionMNISTDataModule",
           "MNISTDataModule", "TaskDataset"]
