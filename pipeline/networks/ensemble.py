"""Several trained copies of one network as one module that averages their probabilities (a fold ensemble)."""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Hashable, Mapping, Sequence

import torch
from torch import nn

from pipeline.networks.grouped_unet import GroupedUNet2D
from pipeline.networks.unet import UNet2D
from pipeline.user_errors import UserError

# How configs name the ensemble, and the prefix of each member's weights in its state dict.
ENSEMBLE_TARGET = "pipeline.networks.ProbabilityEnsemble"
MEMBER_PREFIX = "members."
# Probabilities are clamped to this before the log, so a certain pixel gives a finite logit.
SMALLEST_PROBABILITY = 1e-30


class ProbabilityEnsemble(nn.Module):
    """Copies of ``member`` whose softmax probabilities are averaged; the output is the log of that average.

    The log of a probability map is a valid logit map (its softmax gives the map back), so the ensemble is a
    drop-in replacement for one network: every inferer, post-processing step and export that takes the single
    network's logits takes the ensemble's output unchanged. With one member the output is the member's
    log-softmax, which thresholds exactly as its logits do.

    Inference runs :class:`UNet2D` members as one network: in eval mode without gradients the running members'
    layers run once for all of them, as a :class:`GroupedUNet2D` built from their weights at the first such
    call and rebuilt whenever a member's weights change (loaded, moved to another device). It is not part of the
    module's state: the weights file, training, gradients and TorchScript or ONNX export see the members one by
    one, each in the classic layout.

    Args:
        member: the network every member copies (its weights are replaced when the ensemble's are loaded).
        folds: one label per member: the cross-validation fold each was validated on (and trained without).
        use_folds: the folds whose members run, e.g. one for speed; None (the default) runs them all. Which
            members run is not part of the weights: every checkpoint of the ensemble loads whatever runs.
        one_network: run :class:`UNet2D` members as one grouped network in inference (the default); False runs
            them one by one, as training does.

    Raises ``UserError`` when ``use_folds`` names a fold the ensemble does not hold.
    """

    # The grouped network is a copy of the members' weights for inference, which scripting must not see.
    __jit_ignored_attributes__ = ["grouped"]

    def __init__(
        self,
        member: nn.Module,
        folds: Sequence[int],
        use_folds: Sequence[int] | None = None,
        one_network: bool = True,
    ) -> None:
        super().__init__()
        if not folds:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(copy.deepcopy(member) for _ in folds)
        self.folds = [int(fold) for fold in folds]
        unknown = sorted(set(use_folds or ()) - set(self.folds))
        if unknown or (use_folds is not None and not use_folds):
            raise UserError(
                f"folds {unknown or '[]'}: the ensemble holds folds {', '.join(map(str, self.folds))}; "
                "choose among them"
            )
        self.smallest_probability = SMALLEST_PROBABILITY
        self.active = [i for i, fold in enumerate(self.folds) if use_folds is None or fold in use_folds]
        self.one_network = one_network and isinstance(member, UNet2D)
        # (the running members' weights it was built from, the network); kept out of the module's state.
        self.grouped: tuple[Hashable, GroupedUNet2D] | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) logits-like output: the log of the active members' mean softmax probability."""
        total = torch.zeros(1, device=inputs.device)
        for logits in self._member_logits(inputs):
            total = total + torch.softmax(logits.float(), dim=1)
        return torch.log((total / len(self.active)).clamp_min(self.smallest_probability))

    def _member_logits(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each active member's logits, in fold order."""
        if not torch.jit.is_scripting():
            if self.runs_as_one_network():
                return list(self._grouped_network()(inputs).unflatten(1, (len(self.active), -1)).unbind(1))
        logits: list[torch.Tensor] = []
        for index, member in enumerate(self.members):
            if index in self.active:
                logits.append(member(inputs))
        return logits

    @torch.jit.unused
    def runs_as_one_network(self) -> bool:
        """Whether a forward pass now runs the members as one network: ``one_network`` with :class:`UNet2D`
        members, in eval mode, without gradients, in eager mode (not traced or compiled for export)."""
        exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
        return self.one_network and not self.training and not torch.is_grad_enabled() and not exporting

    @torch.jit.unused
    def _grouped_network(self) -> GroupedUNet2D:
        """The active members as one :class:`GroupedUNet2D`, rebuilt when any of their weights changed."""
        members = [self.members[index] for index in self.active]
        tensors = itertools.chain.from_iterable(itertools.chain(m.parameters(), m.buffers()) for m in members)
        # An in-place change (a loaded checkpoint) bumps a tensor's version; a move or cast gives new storage.
        weights = tuple((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors)
        if self.grouped is None or self.grouped[0] != weights:
            self.grouped = (weights, GroupedUNet2D(members))
        return self.grouped[1]


def member_state(state: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The weights of member ``index`` in the state dict ``state`` of an ensemble, named as the member's own."""
    prefix = f"{MEMBER_PREFIX}{index}."
    return {name[len(prefix) :]: tensor for name, tensor in state.items() if name.startswith(prefix)}


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values, independent of how the file holding it was
    written: one fold model has the same digest alone in its run folder and as a member of the shipped ensemble."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
