"""Networks the bundle configs declare as ``network_def``."""

from pipeline.networks.ensemble import ProbabilityEnsemble, state_digest
from pipeline.networks.unet import UNet2D

__all__ = ["ProbabilityEnsemble", "UNet2D", "state_digest"]
