"""One LightningDataModule per dataset: classification datasets share :class:`ClassificationDataModule`,
detection/segmentation datasets :class:`DenseDataModule`."""
from .base import ClassificationDataModule, DatasetNotFoundError, TaskDataset
from .decathlon import DecathlonDataModule
from .dense import DenseDataModule, ShapesDetectionDataModule, ShapesSegmentationDataModule
from .digits import DigitsDataModule, ShiftedDigitsDataModule
from .files import FileDataModule, ImageFiles, extract_once
from .folder import ClassFolderDataModule, ImageFolderDataModule
from .joint import JointDataModule
from .mnist_like import FashionMNISTDataModule, MNISTDataModule
from .omniglot import OmniglotDataModule
from .torchvision_sets import (CIFAR10DataModule, CIFAR100DataModule, DTDDataModule, FGVCAircraftDataModule,
                               Flowers102DataModule, GTSRBDataModule, STL10DataModule, StanfordCarsDataModule,
                               SVHNDataModule, USPSDataModule)
from .voc import VOCDetectionDataModule, VOCSegmentationDataModule

__all__ = [
    "CIFAR100DataModule", "CIFAR10DataModule", "ClassFolderDataModule", "ClassificationDataModule", "DTDDataModule",
    "DatasetNotFoundError", "DecathlonDataModule", "DenseDataModule", "DigitsDataModule", "FGVCAircraftDataModule",
    "FashionMNISTDataModule", "FileDataModule", "Flowers102DataModule", "GTSRBDataModule", "ImageFiles",
    "ImageFolderDataModule", "JointDataModule", "MNISTDataModule", "OmniglotDataModule", "STL10DataModule",
    "SVHNDataModule", "ShapesDetectionDataModule", "ShapesSegmentationDataModule", "ShiftedDigitsDataModule",
    "StanfordCarsDataModule", "TaskDataset", "USPSDataModule", "VOCDetectionDataModule", "VOCSegmentationDataModule",
    "extract_once",
]
