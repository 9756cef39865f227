"""Masks from the tumour probabilities that several ``infer --save-probabilities`` runs saved, like
``nnUNetv2_ensemble``: the probabilities of each slice are averaged over the runs, then thresholded and
post-processed exactly as ``infer`` turns its own probability into a mask.

Only what the runs' records vouch for is averaged: every run must have left its ``inference_record.json``, the
records must name the same source file (path and size) behind each probability, and a probability its run did
not finish writing is not used. A probability that cannot be read, is not the same slice as the others' (shape,
affine), or holds values outside [0, 1] fails that slice alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from pipeline.atomic import atomic_path
from pipeline.inference.discovery import not_a_regular_file
from pipeline.inference.record import RECORD_NAME, WRITTEN
from pipeline.user_errors import UserError

PROBABILITY_SUFFIX, MASK_SUFFIX = "_prob.nii.gz", "_seg.nii.gz"


@dataclass
class EnsembleRun:
    """One ``infer --save-probabilities`` run an ensemble averages.

    Args:
        folder: its output folder.
        record: its ``inference_record.json``.
        probabilities: its probability files by their path relative to ``folder``.
    """

    folder: Path
    record: dict
    probabilities: dict[str, Path]

    def source(self, name: str) -> tuple[str, int | None, str]:
        """The input file behind the probability ``name``, its size in bytes, and its status in the record."""
        path = str(self.probabilities[name])
        for entry in self.record["inputs"]:
            if isinstance(entry, dict) and path in entry.get("outputs", []):
                return str(entry.get("input")), entry.get("size"), str(entry.get("status"))
        return "", None, "not in the record"


def read_runs(folders: Sequence[Path]) -> list[EnsembleRun]:
    """The runs in ``folders``; ``UserError`` for a folder with no probabilities or no readable record."""
    runs = []
    for folder in folders:
        probabilities = {str(path.relative_to(folder)): path for path in sorted(folder.rglob(f"*{PROBABILITY_SUFFIX}"))}
        if not probabilities:
            raise UserError(f"{folder}: holds no *{PROBABILITY_SUFFIX}; write them with infer --save-probabilities")
        if (folder / RECORD_NAME).exists() and (kind := not_a_regular_file(folder / RECORD_NAME)):
            raise UserError(f"{folder / RECORD_NAME}: not a regular file ({kind}); it is not opened")
        try:
            record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
            if not isinstance(record.get("inputs"), list):
                raise TypeError
        except (OSError, ValueError, TypeError, AttributeError):
            raise UserError(
                f"{folder}: no readable {RECORD_NAME}, so nothing says which slices these probabilities are of; "
                "ensemble averages the outputs of infer --save-probabilities runs"
            ) from None
        runs.append(EnsembleRun(folder, record, probabilities))
    return runs


def matching_names(runs: Sequence[EnsembleRun]) -> list[str]:
    """The probability names every run holds, each of the same source file in every run's record.

    Raises ``UserError`` naming the first name missing from a run, or the first whose runs name different sources
    (another file, or the same path with another size): those are not the same slice.
    """
    names = sorted(set().union(*(run.probabilities for run in runs)))
    for run in runs:
        missing = [name for name in names if name not in run.probabilities]
        if missing:
            raise UserError(
                f"{run.folder}: lacks {missing[0]} ({len(missing)} files missing) that another folder holds"
            )
    for name in names:
        first, *others = [(run, run.source(name)[:2]) for run in runs]
        for run, source in others:
            if source[0] and first[1][0] and source != first[1]:
                raise UserError(
                    f"{run.folder / name}: made from {source[0]} ({source[1]} bytes), but {first[0].folder / name} "
                    f"from {first[1][0]} ({first[1][1]} bytes): not the same slice"
                )
    return names


def average_probability(paths: Sequence[Path]) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The mean of the probability maps at ``paths`` and the first one's image (for its geometry).

    Raises ``ValueError`` naming the file that cannot be read, whose shape or affine differs from the first's, or
    whose values are not all probabilities (NaN, infinite, or outside [0, 1]).
    """
    images = []
    for path in paths:
        try:
            image = nib.load(path)
            values = np.asarray(image.dataobj, dtype=np.float32)
        except Exception as error:  # empty, truncated or not NIfTI: the reader's fault says which
            raise ValueError(f"{path}: cannot be read as a probability map ({' '.join(str(error).split())})") from None
        if not np.all(np.isfinite(values)) or values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(f"{path}: holds values that are no probabilities (NaN, infinite, or outside [0, 1])")
        images.append((path, image, values))
    first_path, first, total = images[0][0], images[0][1], np.zeros(images[0][2].shape, dtype=np.float32)
    for path, image, values in images:
        if image.shape != first.shape or not np.allclose(image.affine, first.affine, atol=1e-4):
            raise ValueError(f"{path}: shape {image.shape} or affine differs from {first_path}; not the same slice")
        total += values
    return total / len(paths), first


def write_ensemble_mask(paths: Sequence[Path], target: Path, mask_transforms: Callable[[dict], dict]) -> Path:
    """Average the probabilities at ``paths`` and write their mask (uint8 NIfTI with the first probability's
    geometry) to ``target`` atomically; return it.

    ``mask_transforms`` is the bundle's mask post-processing (threshold, largest component, holes filled),
    applied to ``{"pred": probability with a channel axis}``.
    """
    probability, reference = average_probability(paths)
    # Each map is a float16 probability; summing in float32 and dividing can land between two float16 values, so
    # the mean is rounded as a saved probability is before thresholding.
    probability = probability.astype(np.float16).astype(np.float32)
    mask = mask_transforms({"pred": torch.from_numpy(probability[None])})["pred"][0]
    image = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), reference.affine, reference.header)
    image.set_data_dtype(np.uint8)
    with atomic_path(target) as tmp:
        nib.save(image, tmp)
    return target


def unwritten_reason(runs: Sequence[EnsembleRun], name: str) -> str:
    """Why the probabilities ``name`` cannot be averaged because a run did not finish writing them; else empty."""
    for run in runs:
        status = run.source(name)[2]
        if status != WRITTEN:
            return f"{run.probabilities[name]}: its run's record says {status}, not written"
    return ""


def mask_name(name: str) -> str:
    """The mask's name for the probability ``name``: ``_prob`` becomes ``_seg``."""
    return name[: -len(PROBABILITY_SUFFIX)] + MASK_SUFFIX
