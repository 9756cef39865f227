"""Networks the bundle configs declare as ``network_def``."""

from pipeline.networks.unet import UNet2D

__all__ = ["UNet2D"]
