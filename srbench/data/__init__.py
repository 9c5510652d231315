"""Datasets and image I/O."""

from srbench.data.folders import DatasetError, Sample, SRDataset, build_dataset, lr_only_folder, paired_folder
from srbench.data.images import ImageReadError, read_image, save_png

__all__ = [
    "DatasetError",
    "ImageReadError",
    "SRDataset",
    "Sample",
    "build_dataset",
    "lr_only_folder",
    "paired_folder",
    "read_image",
    "save_png",
]
