"""A MONAI dictionary transform that saves a picture of each prediction drawn over its image."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image
from scipy import ndimage

from pipeline.atomic import atomic_path


def overlay_rgb(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """Return an RGB uint8 picture of a 2D ``image`` (any range) with the outline of ``mask`` in ``color``."""
    image = image.astype(np.float32)
    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    mask = mask.astype(bool)
    outline = mask & ~ndimage.binary_erosion(mask, iterations=max(1, max(mask.shape) // 256))
    rgb[outline] = color
    return rgb


class SaveOverlayd(MapTransform):
    """Save ``<input name>_overlay.png`` showing the predicted outline over the input image.

    The prediction (``keys``, one channel of labels at the input's size) is drawn over ``image_key``,
    which may be at model resolution: it is resized to the prediction's size for display only.
    The PNG shows the slice the way a viewer does (first array axis horizontal), like MONAI's PNG writer.

    Args:
        keys: key of the predicted label map.
        image_key: key of the image to draw on.
        output_dir: folder for the PNG files (created if needed).
        data_root_dir: when given, the input's folder relative to it is kept below ``output_dir``, as
            ``SaveImaged`` does with the same argument.
        allow_missing_keys: don't raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str,
        output_dir: str | os.PathLike,
        data_root_dir: str | os.PathLike = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.output_dir = Path(output_dir)
        self.data_root_dir = data_root_dir

    def output_path(self, source: str | os.PathLike) -> Path:
        """Where the overlay of the input ``source`` is saved: ``<stem>_overlay.png`` in ``output_dir``, below which
        the folder of ``source`` relative to ``data_root_dir`` is kept when that is given."""
        source = Path(source)
        stem = source.name.removesuffix(".gz").rsplit(".", 1)[0]
        if not self.data_root_dir:
            return self.output_dir / f"{stem}_overlay.png"
        return self.output_dir / os.path.relpath(source.parent, self.data_root_dir) / f"{stem}_overlay.png"

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        source = Path(str(image.meta.get("filename_or_obj", "slice"))) if hasattr(image, "meta") else Path("slice")
        for key in self.key_iterator(d):
            mask = torch.as_tensor(d[key])[0].detach().cpu()
            picture = torch.as_tensor(image)[0].detach().float().cpu()
            if picture.shape != mask.shape:
                size = tuple(mask.shape)
                picture = torch.nn.functional.interpolate(picture[None, None], size=size, mode="bilinear")[0, 0]
            rgb = overlay_rgb(picture.numpy().T, mask.numpy().T > 0)
            with atomic_path(self.output_path(source)) as tmp:
                Image.fromarray(rgb).save(tmp, format="PNG")
        return d
