"""MONAI-style transforms the bundle configs use where MONAI has none."""

from pipeline.transforms.overlay import SaveOverlayd, overlay_path, overlay_rgb

__all__ = ["SaveOverlayd", "overlay_path", "overlay_rgb"]
