"""Deep supervision (nnU-Net style) for training only: segmentation heads on the U-Net decoder's coarser levels."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.networks.unet import UNet2D


class DeepSupervision(nn.Module):
    """A U-Net whose decoder also predicts the segmentation at 1/2, 1/4, ... of the input size, while it trains.

    Forward hooks keep the outputs of the decoder blocks below full resolution, and a 1x1 convolution per level
    (a head) maps each to logits. In training mode the forward returns ``[logits, logits at 1/2, logits at 1/4,
    ...]``, finest first, the list MONAI's ``DeepSupervisionLoss`` weighs and scores against downsampled targets;
    in evaluation mode it returns the network's logits alone. The network is left as it is: its state dict, and so
    ``model.pt`` and every stage after training, hold no head; the heads live on the network's device and are
    saved, for resuming, as a module of their own.

    The heads are initialised from a fork of torch's random generator, so a run with deep supervision starts from
    the same network and draws the same batches as the same run without it.

    Args:
        network: the ``UNet2D`` to supervise (``padding="same"``), or a ``DistributedDataParallel`` around one.
        levels: how many decoder levels below full resolution get a head: 1 (1/2) to 3 (1/2, 1/4, 1/8); nnU-Net
            supervises 1/2 and 1/4 (its coarsest output weighs 0).

    Raises:
        ValueError: for a network that is no "same"-padded ``UNet2D``, or ``levels`` outside 1-3.
    """

    def __init__(self, network: nn.Module, levels: int = 2) -> None:
        super().__init__()
        unet = getattr(network, "module", network)
        if not isinstance(unet, UNet2D) or unet.padding != "same":
            raise ValueError(f"deep supervision needs a UNet2D with padding='same', got {type(unet).__name__}")
        if not 1 <= levels < len(unet.decoder):
            raise ValueError(f"deep supervision levels must be 1 to {len(unet.decoder) - 1}, got {levels}")
        self.network = network
        # The decoder runs deepest first; its last block is at full resolution and feeds the network's own head.
        blocks = [unet.decoder[len(unet.decoder) - 1 - level] for level in range(1, levels + 1)]  # 1/2, 1/4, ...
        with torch.random.fork_rng(devices=[]):  # initialised on the CPU, whatever the network's device
            heads = nn.ModuleList(
                nn.Conv2d(block.up.out_channels, unet.out_channels, kernel_size=1) for block in blocks
            )
        self.heads = heads.to(next(unet.parameters()).device)
        self.size_multiple = unet.size_multiple
        self._features: list[torch.Tensor] | None = None
        for block in blocks:
            block.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._features is not None:  # only inside this module's own training forward, never in validation
            self._features.append(output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits ``(N, C, H, W)`` in evaluation mode; in training mode, those and each head's ``(N, C, H/2^k, W/2^k)``.

        Raises ``ValueError`` in training mode for a side that is no multiple of 16, where the network pads the
        input and a head's logits would no longer line up with the downsampled target.
        """
        if not self.training:
            return self.network(x)
        if x.shape[2] % self.size_multiple or x.shape[3] % self.size_multiple:
            raise ValueError(
                f"deep supervision trains on sides that are multiples of {self.size_multiple}, got {list(x.shape[2:])}"
            )
        self._features = []
        try:
            logits = self.network(x)
            coarse_first = self._features
        finally:
            self._features = None
        return [logits, *(head(features) for head, features in zip(self.heads, reversed(coarse_first), strict=True))]
