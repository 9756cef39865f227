"""Refuse images holding NaN or infinite values before they reach the network, which would turn them into an
empty mask without a word."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


class NonFiniteImageError(ValueError):
    """An image with NaN or infinite values."""


class RequireFinited(MapTransform):
    """Raise ``NonFiniteImageError`` naming the file (from the image's ``filename_or_obj`` metadata) and how many
    pixels are NaN or infinite; pass the data on unchanged otherwise.

    Args:
        keys: the keys of the images to check.
        allow_missing_keys: don't raise for a missing key.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            bad = int((~torch.isfinite(image)).sum()) if image.is_floating_point() else 0
            if bad:
                source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise NonFiniteImageError(
                    f"{source}: {bad} of {image.numel()} pixels are NaN or infinite; the image cannot be segmented"
                )
        return d
