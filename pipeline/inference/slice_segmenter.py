"""The bundle's 2D model applied slice by slice to a 3D volume, in the in-plane orientation it was trained on.

The network, its weights, the slice preprocessing, the inferer and the mask post-processing are the components
:class:`~pipeline.inference.predictor.BundlePredictor` built from ``configs/inference.json``: the same objects
that segment a 2D slice file segment each slice of a volume. Only how the slices are cut from the volume,
batched, and put back is defined here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks import eval_mode
from monai.transforms import Compose

from pipeline.transforms.finite import NonFiniteImageError

# The axis codes that put every slice of a volume in the training slices' layout. The model was trained on
# slices as MONAI reads PNG/MAT files: index [column, row] of the displayed image. In the radiological display
# of DICOM viewers, columns run from the patient's right to left (L) or front to back (P) and rows from front
# to back (P) or head to feet (I), so a volume reoriented to L, P, I gives axial slices [L, P], coronal slices
# [L, I] and sagittal slices [P, I]: each one indexed [column, row] as displayed.
TRAINING_AXCODES = ("L", "P", "I")


def refuse_non_finite(scan: np.ndarray) -> None:
    """Raise ``NonFiniteImageError`` saying how many voxels of ``scan`` are NaN or infinite, if any."""
    bad = int(np.size(scan) - np.count_nonzero(np.isfinite(scan)))
    if bad:
        raise NonFiniteImageError(f"{bad} of {np.size(scan)} voxels are NaN or infinite; the scan is not segmented")


class SliceSegmenter:
    """The bundle's trained network, slice preprocessing and mask post-processing, applied slice by slice to a
    volume.

    Args:
        network: the network, its weights loaded, on ``device``.
        inferer: the MONAI inferer that runs it on a batch of slices.
        slice_transforms: the per-slice preprocessing, for a dict whose ``image`` is one slice as MONAI reads
            a 2D file: (columns, rows), no channel.
        probability_transforms: the per-slice post-processing turning ``pred`` (the network's output for the
            slice) into the tumour probability at the slice's own size.
        mask_transforms: the per-slice post-processing turning that probability into a binary mask.
        device: where the network runs.
        amp_dtype: the CUDA autocast dtype the network runs under (the training's), or None for full precision.
        batch_size: slices per forward pass.
        name: the bundle's name, for the outputs' provenance.
        version: the bundle's version.

    ``on_slices``, when set, is called after each forward pass with the slices of the scan done so far and the
    slices it has (a command's progress report).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Any,
        slice_transforms: Compose,
        probability_transforms: Compose,
        mask_transforms: Compose,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        batch_size: int = 8,
        name: str = "",
        version: str = "",
    ) -> None:
        self.network = network
        self.inferer = inferer
        self.slice_transforms = slice_transforms
        self.probability_transforms = probability_transforms
        self.mask_transforms = mask_transforms
        self.device = device
        self.amp_dtype = amp_dtype
        self.batch_size = max(1, int(batch_size))
        self.name = name
        self.version = version
        self.on_slices: Callable[[int, int], object] | None = None

    def segment(self, volume: np.ndarray, affine: np.ndarray, slice_axis: int) -> np.ndarray:
        """uint8 {0,1} mask with ``volume``'s shape; ``affine`` is RAS+ (used to bring each slice to the
        in-plane orientation the model was trained on, and back).

        ``slice_axis`` is the voxel axis the slices are cut along. The volume is only transposed and flipped
        (never resampled) into the training orientation, so the mask maps back voxel for voxel. Each slice is
        resized to the model's input size whatever its pixel spacing, as the training slices were.
        """
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
        to_training = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(TRAINING_AXCODES)
        )
        axis = int(to_training[slice_axis % 3, 0])
        masks = self.segment_slices(np.moveaxis(nib.orientations.apply_orientation(volume, to_training), axis, 0))
        back = nib.orientations.ornt_transform(
            nib.orientations.axcodes2ornt(TRAINING_AXCODES), nib.orientations.io_orientation(affine)
        )
        return np.ascontiguousarray(nib.orientations.apply_orientation(np.moveaxis(masks, 0, axis), back))

    def segment_slices(self, slices: np.ndarray) -> np.ndarray:
        """uint8 {0,1} masks of ``slices``, shape (n, columns, rows): 2D slices laid out as the training slices
        were (index [column, row] of the displayed image), as MONAI reads a 2D slice file.

        Raises ``NonFiniteImageError`` when any pixel is NaN or infinite: the network would make it an empty mask.
        """
        refuse_non_finite(slices)
        masks = []
        for start in range(0, len(slices), self.batch_size):
            masks.append(self._segment_batch(slices[start : start + self.batch_size]))
            if self.on_slices is not None:
                self.on_slices(min(start + self.batch_size, len(slices)), len(slices))
        return np.concatenate(masks)

    def _segment_batch(self, slices: np.ndarray) -> np.ndarray:
        """The masks of ``slices`` in one forward pass."""
        # Each slice enters the transforms as a MONAI reader hands over a 2D image: float, no channel yet.
        meta = {"original_channel_dim": "no_channel"}
        items = [
            self.slice_transforms({"image": MetaTensor(np.ascontiguousarray(image, dtype=np.float32), meta=dict(meta))})
            for image in slices
        ]
        inputs = torch.stack([item["image"].as_tensor() for item in items]).to(self.device)
        with eval_mode(self.network), torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype else nullcontext():
            logits = self.inferer(inputs, self.network).float().cpu()
        probabilities = [
            self.probability_transforms({**item, "pred": MetaTensor(pred)})["pred"] for item, pred in zip(items, logits)
        ]
        masks = [self.mask_transforms({"pred": probability})["pred"][0] for probability in probabilities]
        return np.stack([np.asarray(mask, dtype=np.uint8) for mask in masks])
