"""Several trained :class:`UNet2D` of one architecture run as one network, their weights side by side in each layer."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.networks.unet import DoubleConv, UNet2D

__all__ = ["GroupedUNet2D"]


class GroupedUNet2D(UNet2D):
    """The inference of several :class:`UNet2D` of the same arguments as one network.

    The inner levels (encoder levels 2-4, the bottleneck, decoder levels 4-2) hold every member's weights side by
    side: each convolution is grouped (``groups`` = the member count) and each normalisation holds the members'
    statistics and affine weights side by side, so each of these layers runs once for all members; member
    ``g``'s feature maps are the channels ``[g * C, (g + 1) * C)`` of each map. The outermost level (the first
    encoder block, the last decoder block and the head), whose maps are the largest, runs member by member on
    copies of the members' own blocks: grouped, its maps would be ``members`` times larger, and the C allocator
    hands blocks that large back to the system after each pass, so that every pass would pay again for the
    memory (a fifth more CPU time for four members at 256 px). Feature maps are ``channels_last`` (oneDNN's and
    cuDNN's native layout).

    It takes the same inputs, pads and crops as :class:`UNet2D` (its ``forward`` is the same) and returns
    ``(N, members * out_channels, H_out, W_out)``, member ``g``'s logits in channels
    ``[g * out_channels, (g + 1) * out_channels)``, equal to that member's own to float rounding. It holds copies
    of the members' weights taken when it is built and runs as the members do in eval mode (running statistics,
    no dropout); it is never trained.

    Args:
        members: networks built with the same arguments (any norm and padding), whose weights it copies.

    Raises:
        ValueError: for no members, or members whose weights differ in names or shapes.
    """

    def __init__(self, members: Sequence[UNet2D]) -> None:
        if not members:
            raise ValueError("GroupedUNet2D needs at least one member")
        shapes = [{name: value.shape for name, value in member.state_dict().items()} for member in members]
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise ValueError("GroupedUNet2D needs members built with the same arguments")
        # UNet2D.__init__ would build and initialise one member's layers only to have them replaced: the layers
        # are built here instead, and the attributes UNet2D.forward reads are copied from the first member.
        nn.Module.__init__(self)
        first = members[0]
        self.in_channels = first.in_channels
        self.out_channels = len(members) * first.out_channels
        self.padding = first.padding
        self.groups = len(members)
        self.outer_encoder = nn.ModuleList(copy.deepcopy(member.encoder[0]) for member in members)
        self.outer_decoder = nn.ModuleList(copy.deepcopy(member.decoder[-1]) for member in members)
        self.heads = nn.ModuleList(copy.deepcopy(member.head) for member in members)
        self.encoder = nn.ModuleList(
            _grouped_double_conv([member.encoder[level].convs for member in members])
            for level in range(1, len(first.encoder))
        )
        self.bottleneck = _grouped_double_conv([member.bottleneck for member in members])
        inner_decoder = range(len(first.decoder) - 1)  # deepest first, as in UNet2D
        self.ups = nn.ModuleList(
            _grouped_conv([member.decoder[level].up for member in members]) for level in inner_decoder
        )
        self.decoder = nn.ModuleList(
            _grouped_double_conv([member.decoder[level].convs for member in members]) for level in inner_decoder
        )
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        outer = [block(x) for block in self.outer_encoder]  # each member's (skip, pooled), features[0] channels
        x = torch.cat([pooled for _, pooled in outer], dim=1)  # (N, groups * features[0], H / 2, W / 2) "same"
        skips: list[torch.Tensor] = []
        for convs in self.encoder:
            skip = convs(x)  # (N, groups * features[i], H / 2^i, W / 2^i) "same"
            skips.append(skip)
            x = F.max_pool2d(skip, kernel_size=2)
        x = self.bottleneck(x)  # (N, groups * features[4], H / 16, W / 16) "same"
        for level, (up, convs) in enumerate(zip(self.ups, self.decoder, strict=True)):
            x = convs(_join_per_member(skips[len(skips) - 1 - level], up(x), self.groups))
        # Each member's (N, features[1], H / 2, W / 2) "same", as a dense channels_last map for its up-convolution.
        inner = [member.contiguous(memory_format=torch.channels_last) for member in x.chunk(self.groups, dim=1)]
        logits = [
            head(block(member_inner, skip))
            for (skip, _), member_inner, block, head in zip(outer, inner, self.outer_decoder, self.heads, strict=True)
        ]
        return torch.cat(logits, dim=1).contiguous()  # (N, groups * out_channels, H, W) "same"


def _join_per_member(skip: torch.Tensor, up: torch.Tensor, groups: int) -> torch.Tensor:
    """Each member's (centre-cropped) skip channels, then its upsampled ones, member after member: the grouped
    form of :class:`DecoderBlock`'s ``torch.cat([skip, x], dim=1)``."""
    batch, channels, height, width = up.shape
    top = (skip.shape[2] - height) // 2
    left = (skip.shape[3] - width) // 2
    skip = skip[:, :, top : top + height, left : left + width]
    joined = torch.empty(
        (batch, 2 * channels, height, width), dtype=up.dtype, device=up.device, memory_format=torch.channels_last
    )
    per_member = joined.unflatten(1, (groups, -1))  # (N, groups, 2 * C, H, W), a view
    per_member[:, :, : channels // groups].copy_(skip.unflatten(1, (groups, -1)))
    per_member[:, :, channels // groups :].copy_(up.unflatten(1, (groups, -1)))
    return joined


def _grouped_double_conv(blocks: Sequence[DoubleConv]) -> nn.Sequential:
    """The members' :class:`DoubleConv` blocks as one: each convolution grouped, then its norm, then ReLU."""
    layers: list[nn.Module] = []
    for convolutions in zip(*blocks, strict=True):  # the members' MONAI Convolution blocks
        layers.append(_grouped_conv([block.conv for block in convolutions]))
        norms = [getattr(block.adn, "N", None) for block in convolutions]
        if norms[0] is not None:
            layers.append(_grouped_norm(norms))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _grouped_conv(layers: Sequence[nn.Conv2d | nn.ConvTranspose2d]) -> nn.Module:
    """One grouped convolution (or transposed convolution) holding ``layers``' weights side by side."""
    first, count = layers[0], len(layers)
    arguments = {
        "kernel_size": first.kernel_size,
        "stride": first.stride,
        "padding": first.padding,
        "groups": count,
        "bias": first.bias is not None,
        "device": first.weight.device,
        "dtype": first.weight.dtype,
    }
    grouped = nn.utils.skip_init(type(first), first.in_channels * count, first.out_channels * count, **arguments)
    with torch.no_grad():
        grouped.weight.copy_(torch.cat([layer.weight for layer in layers]))
        if grouped.bias is not None:
            grouped.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return grouped


def _grouped_norm(norms: Sequence[nn.BatchNorm2d | nn.InstanceNorm2d]) -> nn.Module:
    """One batch or instance norm holding ``norms``' running statistics and affine weights side by side; every
    channel is normalised on its own, so each member's channels are normalised exactly as in the member."""
    first = norms[0]
    tensors = [tensor for tensor in (first.weight, first.running_mean) if tensor is not None]
    grouped = type(first)(
        first.num_features * len(norms),
        eps=first.eps,
        affine=first.affine,
        track_running_stats=first.track_running_stats,
        device=tensors[0].device if tensors else None,
        dtype=tensors[0].dtype if tensors else None,
    )
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            target = getattr(grouped, name)
            if target is not None:
                target.copy_(torch.cat([getattr(norm, name) for norm in norms]))
    return grouped
