"""The 2D U-Net of Ronneberger, Fischer and Brox (MICCAI 2015), with optional normalisation and two padding modes."""

from collections.abc import Sequence
from typing import Final

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool

__all__ = ["DoubleConv", "EncoderBlock", "DecoderBlock", "UNet2D"]

NORM_CHOICES = (None, "batch", "instance")
PADDING_CHOICES = ("same", "valid")


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (normalisation and) ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, padding: str) -> None:
        """
        Args:
            in_channels: channels of the input feature map.
            out_channels: channels of both convolutions' outputs.
            norm: ``None``, ``"batch"`` or ``"instance"`` (affine), applied between each convolution and its ReLU.
            padding: ``"same"`` keeps H and W; ``"valid"`` (no padding) shrinks each by 2 per convolution.
        """
        super().__init__()
        norm_spec = ("instance", {"affine": True}) if norm == "instance" else norm
        # A bias before a normalisation layer is cancelled by its mean subtraction: only keep it without one.
        bias = norm is None
        conv_padding = 1 if padding == "same" else 0
        for index, channels_in in enumerate((in_channels, out_channels)):
            conv = Convolution(
                spatial_dims=2,
                in_channels=channels_in,
                out_channels=out_channels,
                kernel_size=3,
                act="relu",
                norm=norm_spec,
                bias=bias,
                padding=conv_padding,
            )
            self.add_module(f"conv_{index}", conv)


class EncoderBlock(nn.Module):
    """A :class:`DoubleConv` whose output is kept for the skip connection, then a 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, padding: str) -> None:
        """
        Args:
            in_channels: channels of the input feature map.
            out_channels: channels of the skip output (and of the pooled output).
            norm: see :class:`DoubleConv`.
            padding: see :class:`DoubleConv`.
        """
        super().__init__()
        self.convs = DoubleConv(in_channels, out_channels, norm, padding)
        self.pool = Pool["MAX", 2](kernel_size=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(skip, pooled)`` for an input ``(N, in_channels, H, W)``."""
        skip = self.convs(x)  # (N, out, H, W) "same" | (N, out, H - 4, W - 4) "valid"
        return skip, self.pool(skip)  # pooled: (N, out, H' / 2, W' / 2)


class DecoderBlock(nn.Module):
    """A 2x2 transposed convolution, concatenation with the matching encoder output, then a :class:`DoubleConv`."""

    def __init__(self, in_channels: int, out_channels: int, norm: str | None, padding: str) -> None:
        """
        Args:
            in_channels: channels of the deeper feature map to upsample.
            out_channels: channels of the upsampled map, of the encoder skip map and of the block's output.
            norm: see :class:`DoubleConv`.
            padding: see :class:`DoubleConv`.
        """
        super().__init__()
        self.up = Conv["CONVTRANS", 2](in_channels, out_channels, kernel_size=2, stride=2)
        self.convs = DoubleConv(2 * out_channels, out_channels, norm, padding)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` ``(N, in, h, w)``, join it with ``skip`` ``(N, out, >= 2h, >= 2w)`` and convolve."""
        x = self.up(x)  # (N, out, 2h, 2w)
        # With "valid" padding the encoder map is larger (its convolutions lost less border): centre-crop it,
        # as in the paper. With "same" padding the sizes already agree and the slice is a no-op view.
        top = (skip.shape[2] - x.shape[2]) // 2
        left = (skip.shape[3] - x.shape[3]) // 2
        skip = skip[:, :, top : top + x.shape[2], left : left + x.shape[3]]
        x = torch.cat([skip, x], dim=1)  # (N, 2 * out, 2h, 2w)
        return self.convs(x)  # (N, out, 2h, 2w) "same" | (N, out, 2h - 4, 2w - 4) "valid"


class UNet2D(nn.Module):
    """
    The original U-Net: a 4-level encoder, a bottleneck, a 4-level decoder with skip connections, a 1x1 head.

    With the default widths (64, 128, 256, 512, 1024) it has 23 convolution layers (18 3x3, 4 2x2 up-convolutions,
    one 1x1) and 31,030,658 parameters for 1 input and 2 output channels. Architecture of Ronneberger et al.,
    "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597.

    ``padding="same"`` returns logits of the input's H x W for any H, W >= 1: inputs whose sides are not multiples
    of 16 are zero-padded (centred) to the next multiple inside ``forward`` and the output is cropped back.
    ``padding="valid"`` uses the paper's unpadded convolutions: each side must be ``16 * k + 60`` with ``k >= 8``
    (188, 204, ..., 572, ...) and the output is 184 pixels smaller (572 -> 388); segment whole images of any size
    with :class:`pipeline.inferers.OverlapTileInferer`.

    Convolutions are initialised from a zero-mean normal with std ``sqrt(2 / fan_in)`` (He et al.), as in the
    paper, so the deep ReLU stack trains without normalisation layers.
    """

    # Four 2x2 poolings: the bottleneck sees the input at 1/16 scale.
    size_multiple: Final[int] = 16
    # Valid 3x3 convolutions lose 4 pixels per block at their own scale: 4 * (1 + 2 + 4 + 8) = 60 in the encoder
    # (input side = 16 * bottleneck input side + 60), 4 * 16 = 64 in the bottleneck and 60 in the decoder: 184 in all.
    valid_offset: Final[int] = 60
    valid_shrink: Final[int] = 184
    # The bottleneck input side must be at least 8 so that every decoder level keeps a positive size (188 -> 4).
    valid_min_bottleneck: Final[int] = 8

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str | None = None,
        dropout: float = 0.0,
        padding: str = "same",
    ) -> None:
        """
        Args:
            in_channels: channels of the input image (1 for a single MR contrast).
            out_channels: channels of the output logits (2 for background/tumour).
            features: the 5 widths: the 4 encoder levels (reused by the matching decoder levels) and the bottleneck.
            norm: ``None`` (the paper), ``"batch"`` or ``"instance"`` (affine) after every 3x3 convolution.
            dropout: probability of the dropout layer at the end of the contracting path (after the bottleneck),
                where the paper places it; active in training mode only.
            padding: ``"same"`` (output H x W equals the input's) or ``"valid"`` (the paper's unpadded
                convolutions; output is 184 pixels smaller per side pair).

        Raises:
            ValueError: for a channel count below 1, not exactly 5 positive widths, an unknown ``norm`` or
                ``padding``, or ``dropout`` outside [0, 1).
        """
        super().__init__()
        features = tuple(features)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"UNet2D needs in_channels and out_channels >= 1, got {in_channels} and {out_channels}")
        if len(features) != 5 or any(int(width) < 1 for width in features):
            raise ValueError(f"UNet2D needs 5 positive widths (4 encoder levels + bottleneck), got {features}")
        if norm not in NORM_CHOICES:
            raise ValueError(f"UNet2D norm must be one of {NORM_CHOICES}, got {norm!r}")
        if padding not in PADDING_CHOICES:
            raise ValueError(f"UNet2D padding must be one of {PADDING_CHOICES}, got {padding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet2D dropout must be in [0, 1), got {dropout}")
        # The arguments as JSON values: a training run writes them as the network's definition (model_config.json).
        self.arguments = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": [int(width) for width in features],
            "norm": norm,
            "dropout": dropout,
            "padding": padding,
        }
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.padding = padding

        level_in = (in_channels, *features[:3])
        self.encoder = nn.ModuleList(
            EncoderBlock(channels_in, width, norm, padding)
            for channels_in, width in zip(level_in, features[:4], strict=True)
        )
        self.bottleneck = DoubleConv(features[3], features[4], norm, padding)
        self.dropout = nn.Dropout(dropout)
        # Deepest level first: each block upsamples features[i + 1] to features[i].
        self.decoder = nn.ModuleList(DecoderBlock(features[i + 1], features[i], norm, padding) for i in (3, 2, 1, 0))
        self.head = Conv["CONV", 2](features[0], out_channels, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map an image batch ``(N, in_channels, H, W)`` to logits ``(N, out_channels, H_out, W_out)``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet2D expects a 4D (N, C, H, W) tensor with C={self.in_channels}, got shape {list(x.shape)}"
            )
        height, width = x.shape[2], x.shape[3]
        if self.padding == "valid":
            self._check_valid_side("H", height)
            self._check_valid_side("W", width)
            return self._unet(x)  # (N, out, H - 184, W - 184)
        pad_h = (self.size_multiple - height % self.size_multiple) % self.size_multiple
        pad_w = (self.size_multiple - width % self.size_multiple) % self.size_multiple
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(x, [left, pad_w - left, top, pad_h - top])  # (N, in, H + pad_h, W + pad_w), multiples of 16
        logits = self._unet(x)
        return logits[:, :, top : top + height, left : left + width]  # (N, out, H, W)

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            skip, x = block(x)  # x: (N, features[i], H / 2^(i+1), W / 2^(i+1)) "same"
            skips.append(skip)
        x = self.dropout(self.bottleneck(x))  # (N, features[4], H / 16, W / 16) "same"
        for level, block in enumerate(self.decoder):
            x = block(x, skips[len(skips) - 1 - level])  # back up one level per block
        return self.head(x)  # (N, out_channels, H, W) "same"

    def _check_valid_side(self, axis: str, size: int) -> None:
        above_offset = size - self.valid_offset
        bottleneck_in = above_offset // self.size_multiple
        if above_offset % self.size_multiple == 0 and bottleneck_in >= self.valid_min_bottleneck:
            return
        smallest = self.size_multiple * self.valid_min_bottleneck + self.valid_offset
        above = max(smallest, self.valid_offset + self.size_multiple * (bottleneck_in + 1))
        nearest = f"{above}"
        if bottleneck_in >= self.valid_min_bottleneck:
            nearest = f"{self.valid_offset + self.size_multiple * bottleneck_in} or {above}"
        raise ValueError(
            f"UNet2D(padding='valid') cannot take {axis}={size}: each side must be "
            f"{self.size_multiple}*k+{self.valid_offset} with k>={self.valid_min_bottleneck} "
            f"({smallest}, {smallest + self.size_multiple}, ..., 572, ...); nearest valid: {nearest}"
        )
