"""GroupedUNet2D: several U-Nets as one network of grouped layers, each member's logits as the member's own."""

from __future__ import annotations

import pytest
import torch
from tiny_bundle import trained_looking_unet
from torch import nn

from pipeline.networks import GroupedUNet2D, UNet2D

SMALL = (4, 8, 16, 32, 64)
# Grouped and channels_last kernels sum in another order than the members' own: equal up to float rounding,
# which instance norm amplifies where a deep feature map has few pixels.
TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}


@pytest.mark.parametrize("norm", [None, "batch", "instance"])
@pytest.mark.parametrize(("padding", "size"), [("same", (45, 70)), ("valid", (188, 204))])
def test_each_members_logits_are_the_members_own(norm, padding, size):
    members = [trained_looking_unet(seed, norm=norm, padding=padding) for seed in range(3)]
    grouped = GroupedUNet2D(members)
    image = torch.rand(2, 1, *size)
    with torch.no_grad():
        logits = grouped(image)
        expected = torch.cat([member(image) for member in members], dim=1)
    torch.testing.assert_close(logits, expected, **TOLERANCE)


def test_a_member_alone_is_the_member_in_channels_last():
    member = trained_looking_unet(0, norm="batch")
    image = torch.rand(1, 1, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(GroupedUNet2D([member])(image), member(image), **TOLERANCE)


def test_the_inner_layers_run_once_for_all_members_in_channels_last_and_the_outer_level_per_member():
    members = [trained_looking_unet(seed, norm="batch") for seed in range(4)]
    grouped = GroupedUNet2D(members)
    convolutions = [layer for layer in grouped.modules() if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))]
    layouts = []
    for layer in convolutions:
        layer.register_forward_hook(
            lambda _, inputs, output: layouts.append(output.is_contiguous(memory_format=torch.channels_last))
        )
    with torch.no_grad():
        logits = grouped(torch.rand(1, 1, 32, 32))
    groups = sorted(layer.groups for layer in convolutions)
    # Encoder levels 2-4 and the bottleneck (2 convolutions each), decoder levels 4-2 (an up-convolution and 2)
    # grouped; each member's first encoder block (2), last decoder block (3) and head (1) in its own layers.
    assert groups == [1] * (4 * 6) + [4] * (4 * 2 + 3 * 3)
    assert len(layouts) == len(convolutions) and all(layouts)
    assert logits.is_contiguous()  # made contiguous for the caller


def test_the_copy_keeps_the_weights_it_was_built_from_and_is_never_trained():
    member = trained_looking_unet(0, norm="batch")
    grouped = GroupedUNet2D([member])
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        before = grouped(image)
        member.head.bias.add_(1.0)
        grouped.train()
        torch.testing.assert_close(grouped.eval()(image), before)
    assert not any(parameter.requires_grad for parameter in grouped.parameters())


def test_members_of_different_architectures_are_refused():
    with pytest.raises(ValueError, match="same arguments"):
        GroupedUNet2D([UNet2D(features=SMALL), UNet2D(features=(8, 16, 32, 64, 128))])
    with pytest.raises(ValueError, match="at least one member"):
        GroupedUNet2D([])
