"""Networks the bundle configs declare as ``network_def``."""

from pipeline.networks.ensemble import ProbabilityEnsemble, state_digest
from pipeline.networks.grouped_unet import GroupedUNet2D
from pipeline.networks.unet import UNet2D

__all__ = ["GroupedUNet2D", "ProbabilityEnsemble", "UNet2D", "state_digest"]
