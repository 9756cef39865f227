"""The overlap-tile strategy of Ronneberger et al. (2015): whole-image inference with a valid-padding network."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.utils import ensure_tuple_rep

from pipeline.networks.unet import UNet2D

__all__ = ["OverlapTileInferer", "mirror_pad"]


def _mirror_indices(size: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices of a side of ``size`` mirrored by ``before``/``after`` samples, repeating as often as needed."""
    positions = torch.arange(-before, size + after, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    # Mirroring without repeating the edge sample is periodic with period 2 * (size - 1).
    period = 2 * (size - 1)
    positions = positions.remainder(period)
    return torch.where(positions < size, positions, period - positions)


def mirror_pad(image: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """
    Mirror-pad the last two axes of ``image`` (like ``numpy.pad(mode="reflect")``), also by more than the image size.

    ``torch.nn.functional.pad(mode="reflect")`` rejects pads as wide as the image; small slices still need the
    network's full context margin, so the mirror is repeated.
    """
    rows = _mirror_indices(image.shape[-2], top, bottom, image.device)
    cols = _mirror_indices(image.shape[-1], left, right, image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


class OverlapTileInferer(Inferer):
    """
    Segment whole images of any H x W with a network whose output tile is smaller than its input tile.

    The image is mirror-padded by ``margin`` (plus enough at the bottom/right to fill whole tiles), cut into input
    tiles of ``tile_size`` whose output tiles cover it, the tiles run in batches and their outputs are stitched and
    cropped back to H x W. Tile origins are multiples of ``alignment`` (the network's total pooling factor), so
    every tile sees the same pooling grid as one big tile over the padded image: the stitched result equals running
    the network once on that big tile, without its memory cost.

    For images smaller than a tile, the tile is shrunk by multiples of ``alignment`` (which keeps it a valid input
    size) to the smallest that still covers the image.

    Example (bundle config)::

        "inferer": {"_target_": "pipeline.inferers.OverlapTileInferer", "tile_size": 572, "sw_batch_size": 4}
    """

    def __init__(
        self,
        tile_size: int | Sequence[int] = 572,
        margin: int = UNet2D.valid_shrink // 2,
        alignment: int = UNet2D.size_multiple,
        sw_batch_size: int = 1,
    ) -> None:
        """
        Args:
            tile_size: input tile side, or (H, W); must be a size the network accepts (for
                ``UNet2D(padding="valid")``: ``16 * k + 60``, ``k >= 8``; 572 gives 388 x 388 output tiles).
            margin: context the network consumes on each side (input tile - output tile) / 2; 92 for ``UNet2D``.
            alignment: total downsampling factor of the network (16 for ``UNet2D``'s four poolings); tile strides
                are multiples of it.
            sw_batch_size: number of tile positions run in one network call (each holds the whole input batch).

        Raises:
            ValueError: when a tile leaves an output tile smaller than ``alignment``, or for a negative margin or
                a non-positive ``alignment`` / ``sw_batch_size``.
        """
        self.tile_size = ensure_tuple_rep(tile_size, 2)
        if margin < 0 or alignment < 1 or sw_batch_size < 1:
            raise ValueError(
                f"OverlapTileInferer needs margin >= 0, alignment >= 1 and sw_batch_size >= 1, "
                f"got {margin}, {alignment} and {sw_batch_size}"
            )
        for side in self.tile_size:
            if side - 2 * margin < alignment:
                raise ValueError(
                    f"OverlapTileInferer tile_size {self.tile_size} leaves an output tile of {side - 2 * margin} "
                    f"(tile - 2 * margin {margin}), smaller than the alignment {alignment}"
                )
        self.margin = margin
        self.alignment = alignment
        self.sw_batch_size = sw_batch_size

    def _plan_axis(self, size: int, tile: int) -> tuple[int, int, list[int]]:
        """Return (input tile side, output tile side, tile origins) covering one image axis of ``size``."""
        out = tile - 2 * self.margin
        if size <= out:
            shrink = (out - size) // self.alignment * self.alignment
            return tile - shrink, out - shrink, [0]
        # Overlapping by out % alignment keeps every origin on the pooling grid; overlapping outputs are identical.
        stride = out - out % self.alignment
        count = 1 + math.ceil((size - out) / stride)
        return tile, out, [index * stride for index in range(count)]

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """
        Args:
            inputs: image batch ``(N, C, H, W)``, any H and W.
            network: maps ``(B, C, tile_h, tile_w)`` to ``(B, C_out, tile_h - 2 * margin, tile_w - 2 * margin)``.
            args: optional positional arguments passed to ``network``.
            kwargs: optional keyword arguments passed to ``network``.

        Returns:
            the stitched network output ``(N, C_out, H, W)``.

        Raises:
            ValueError: for inputs that are not 4D, or a network whose output tile does not match ``margin``.
        """
        if inputs.dim() != 4:
            raise ValueError(f"OverlapTileInferer expects a 4D (N, C, H, W) tensor, got shape {list(inputs.shape)}")
        batch, height, width = inputs.shape[0], inputs.shape[2], inputs.shape[3]
        tile_h, out_h, origins_h = self._plan_axis(height, self.tile_size[0])
        tile_w, out_w, origins_w = self._plan_axis(width, self.tile_size[1])
        covered_h, covered_w = origins_h[-1] + out_h, origins_w[-1] + out_w
        padded = mirror_pad(
            inputs, self.margin, covered_h - height + self.margin, self.margin, covered_w - width + self.margin
        )  # (N, C, covered_h + 2 * margin, covered_w + 2 * margin)

        origins = [(top, left) for top in origins_h for left in origins_w]
        stitched: torch.Tensor | None = None
        for start in range(0, len(origins), self.sw_batch_size):
            group = origins[start : start + self.sw_batch_size]
            tiles = torch.cat([padded[:, :, top : top + tile_h, left : left + tile_w] for top, left in group])
            preds = network(tiles, *args, **kwargs)  # (len(group) * N, C_out, out_h, out_w)
            if tuple(preds.shape[2:]) != (out_h, out_w):
                raise ValueError(
                    f"OverlapTileInferer expected the network to turn a {tile_h}x{tile_w} tile into {out_h}x{out_w} "
                    f"(margin {self.margin}), got {preds.shape[2]}x{preds.shape[3]}"
                )
            if stitched is None:
                stitched = preds.new_empty((batch, preds.shape[1], covered_h, covered_w))
            for (top, left), pred in zip(group, preds.split(batch), strict=True):
                stitched[:, :, top : top + out_h, left : left + out_w] = pred
        return stitched[:, :, :height, :width]  # (N, C_out, H, W)
