"""Flip test-time augmentation as a MONAI inferer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer


class FlipTTAInferer(Inferer):
    """Average the network's output over the input and its flips along ``spatial_axes``.

    Each flipped prediction is flipped back before averaging, so the result is aligned with the input.
    Outputs are averaged as given (logits for the bundle's U-Net), then post-processing applies softmax.

    Args:
        spatial_axes: spatial axes to flip, one extra forward pass each (0 is left-right for slices read by
            MONAI's readers).
        inferer: the inferer that runs each pass; ``SimpleInferer`` by default.
    """

    def __init__(self, spatial_axes: Sequence[int] = (0,), inferer: Inferer | None = None) -> None:
        super().__init__()
        self.spatial_axes = tuple(spatial_axes)
        self.inferer = inferer or SimpleInferer()

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """Run ``network`` on ``inputs`` (N, C, H, W) and its flips; return the averaged output."""
        total = self.inferer(inputs, network, *args, **kwargs)
        for axis in self.spatial_axes:
            dims = (axis + 2,)
            total = total + torch.flip(self.inferer(torch.flip(inputs, dims), network, *args, **kwargs), dims)
        return total / (1 + len(self.spatial_axes))
