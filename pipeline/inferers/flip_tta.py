"""Flip test-time augmentation as a MONAI inferer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer

from pipeline.networks.ensemble import SMALLEST_PROBABILITY


class FlipTTAInferer(Inferer):
    """Average the network's softmax probabilities over the input and its flips along ``spatial_axes``.

    Each flipped prediction is flipped back before averaging, so the result is aligned with the input. The
    output is the log of the mean probability: logits whose softmax is that mean, so the post-processing that
    takes one pass's logits takes it unchanged, and a fold ensemble (which outputs the log of its members' mean
    probability) averaged over flips gives the mean probability of every member on every flip.

    The network gets the input as a plain tensor: MONAI's ``MetaTensor`` bookkeeping on every operation of the
    forward pass costs about a fifth of a CPU forward pass, and the input's metadata, which the inverse
    transforms need, stays with the batch.

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
        """Run ``network`` on ``inputs`` (N, C, H, W) and its flips; return the log of the mean probability."""
        inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        total = torch.softmax(self.inferer(inputs, network, *args, **kwargs).float(), dim=1)
        for axis in self.spatial_axes:
            dims = (axis + 2,)
            flipped = self.inferer(torch.flip(inputs, dims), network, *args, **kwargs)
            total = total + torch.flip(torch.softmax(flipped.float(), dim=1), dims)
        return torch.log((total / (1 + len(self.spatial_axes))).clamp_min(SMALLEST_PROBABILITY))
