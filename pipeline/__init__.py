"""2D brain-tumour MRI segmentation: data readers, the custom U-Net and helpers the MONAI bundle points at."""

__version__ = "0.1.0"
