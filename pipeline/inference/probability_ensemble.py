"""Masks from the tumour probabilities that several ``infer --save-probabilities`` runs saved, like
``nnUNetv2_ensemble``: the probabilities of each slice are averaged over the runs, then thresholded and
post-processed exactly as ``infer`` turns its own probability into a mask."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.user_errors import UserError

PROBABILITY_SUFFIX, MASK_SUFFIX = "_prob.nii.gz", "_seg.nii.gz"


def probability_files(folder: Path) -> dict[str, Path]:
    """The probability files below ``folder``, by their path relative to it."""
    return {str(path.relative_to(folder)): path for path in sorted(folder.rglob(f"*{PROBABILITY_SUFFIX}"))}


def matching_probabilities(folders: Sequence[Path]) -> dict[str, list[Path]]:
    """For every probability file name, its file in each of ``folders``.

    Raises ``UserError`` when a folder holds none, or when the folders do not hold the same names (naming the
    first name missing from one of them).
    """
    found = []
    for folder in folders:
        files = probability_files(folder)
        if not files:
            raise UserError(f"{folder}: holds no *{PROBABILITY_SUFFIX}; write them with infer --save-probabilities")
        found.append(files)
    names = sorted(set().union(*found))
    for folder, files in zip(folders, found):
        missing = [name for name in names if name not in files]
        if missing:
            raise UserError(f"{folder}: lacks {missing[0]} ({len(missing)} files missing) that another folder holds")
    return {name: [files[name] for files in found] for name in names}


def average_probability(paths: Sequence[Path]) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The mean of the probability maps at ``paths`` and the first one's image (for its geometry).

    Raises ``UserError`` naming a file whose shape or affine differs from the first's.
    """
    first = nib.load(paths[0])
    total = np.zeros(first.shape, dtype=np.float32)
    for path in paths:
        image = nib.load(path)
        if image.shape != first.shape or not np.allclose(image.affine, first.affine, atol=1e-4):
            raise UserError(f"{path}: shape {image.shape} or affine differs from {paths[0]}; not the same slice")
        total += np.asarray(image.dataobj, dtype=np.float32)
    return total / len(paths), first


def write_ensemble_masks(folders: Sequence[Path], output: Path, mask_transforms: Callable[[dict], dict]) -> list[Path]:
    """Average the probabilities of ``folders`` slice by slice and write each mask (uint8 NIfTI with the
    probability's geometry) to ``output`` under the same relative name, ``_prob`` becoming ``_seg``.

    ``mask_transforms`` is the bundle's mask post-processing (threshold, largest component, holes filled),
    applied to ``{"pred": probability with a channel axis}``. Returns the written masks.
    """
    written = []
    for name, paths in matching_probabilities(folders).items():
        probability, reference = average_probability(paths)
        # Each map is a float16 probability; summing in float32 and dividing can land between two float16
        # values, so the mean is rounded as a saved probability is before thresholding.
        probability = probability.astype(np.float16).astype(np.float32)
        mask = mask_transforms({"pred": torch.from_numpy(probability[None])})["pred"][0]
        target = output / (name[: -len(PROBABILITY_SUFFIX)] + MASK_SUFFIX)
        image = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), reference.affine, reference.header)
        image.set_data_dtype(np.uint8)
        with atomic_path(target) as tmp:
            nib.save(image, tmp)
        written.append(target)
    return written
