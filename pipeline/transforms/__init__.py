"""MONAI-style transforms the bundle configs use where MONAI has none."""

from pipeline.transforms.finite import NonFiniteImageError, RequireFinited
from pipeline.transforms.overlay import SaveOverlayd, overlay_rgb

__all__ = ["NonFiniteImageError", "RequireFinited", "SaveOverlayd", "overlay_rgb"]
