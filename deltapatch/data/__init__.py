"""One LightningDataModule per dataset, all sharing :class:`ClassificationDataModule`."""
from .base import ClassificationDataModule, DatasetNotFoundError, TaskDataset
from .decathlon import DecathlonDataModule
from .digits import DigitsDataModule
from .files import FileDataModule, ImageFiles, extract_once
from .folder import ClassFolderDataModule, ImageFolderDataModule
from .mnist_like import FashionMNISTDataModule, MNISTDataModule
from .omniglot import OmniglotDataModule
from .torchvision_sets import (CIFAR10DataModule, CIFAR100DataModule, DTDDataModule, FGVCAircraftDataModule,
                               Flowers102DataModule, GTSRBDataModule, STL10DataModule, StanfordCarsDataModule,
                               SVHNDataModule, USPSDataModule)

__all__ = [
    "CIFAR100DataModule", "CIFAR10DataModule", "ClassFolderDataModule", "ClassificationDataModule", "DTDDataModule",
    "DatasetNotFoundError", "DecathlonDataModule", "DigitsDataModule", "FGVCAircraftDataModule",
    "FashionMNISTDataModule", "FileDataModule", "Flowers102DataModule", "GTSRBDataModule", "ImageFiles",
    "ImageFolderDataModule", "MNISTDataModule", "OmniglotDataModule", "STL10DataModule", "SVHNDataModule",
    "StanfordCarsDataModule", "TaskDataset", "USPSDataModule", "extract_once",
]
