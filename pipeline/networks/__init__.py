"""Networks the bundle configs declare as ``network_def``, and the training-only deep supervision around one."""

from pipeline.networks.deep_supervision import DeepSupervision
from pipeline.networks.ensemble import ProbabilityEnsemble, state_digest
from pipeline.networks.grouped_unet import GroupedUNet2D
from pipeline.networks.unet import UNet2D

__all__ = ["DeepSupervision", "GroupedUNet2D", "ProbabilityEnsemble", "UNet2D", "state_digest"]
