"""The plan of an ``infer`` run, made before its first write: every input's outputs, named by the configured
writers, no output claimed twice, and (``--continue``) which earlier outputs can be kept."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.sources import NIFTI_SUFFIXES
from pipeline.inference.record import RECORD_NAME, SKIPPED, WRITTEN, InputOutcome
from pipeline.outputs import require_inside
from pipeline.user_errors import UserError

if TYPE_CHECKING:
    from pipeline.dicom.series import DicomSeries
    from pipeline.inference.discovery import Inputs
    from pipeline.inference.predictor import BundlePredictor

# The settings that change what a mask holds: --continue keeps earlier outputs only where they all agree.
MASK_SETTINGS = ("threshold", "image_size", "flip_tta", "keep_largest_component", "fill_holes", "folds", "output_ext")
# Overrides that change how a run works, never what it writes (the weights are compared by their SHA-256).
OUTPUT_NEUTRAL_OVERRIDES = frozenset({"num_workers", "slice_batch_size", "ckpt_dir"})


def planned_outcomes(
    found: Inputs, series: Sequence[DicomSeries], predictor: BundlePredictor, nifti_copy: bool
) -> dict[Path | str, InputOutcome]:
    """The outcome of every input, by path (a DICOM series: by its UID), with the outputs it is to get: a slice's
    and a volume's named by the predictor's writers, a series' by :func:`~pipeline.inference.scans.series_outputs`,
    each proven to lie inside the output folder; a slice read otherwise than stored carries a note saying how.

    Raises ``UnsafeOutputPathError`` before anything is written when an output would lie outside the folder.
    """
    from pipeline.data.greyscale import greyscale_note
    from pipeline.inference.scans import series_outputs

    output, root = Path(predictor.value("output_dir")), Path(predictor.value("data_root_dir"))
    outcomes: dict[Path | str, InputOutcome] = {
        path: InputOutcome(str(path), predictor.slice_outputs(path), note=greyscale_note(path), size=_size(path))
        for path in found.slices
    }
    outcomes |= {
        path: InputOutcome(str(path), [predictor.volume_output(path)], size=_size(path)) for path in found.volumes
    }
    for item in series:
        outputs = series_outputs(item, output, root, nifti_copy, overlay=predictor.value("save_overlays"))
        outcomes[item.series_uid] = InputOutcome(item.label, [str(path) for path in outputs])
    for outcome in outcomes.values():
        for path in outcome.outputs:
            require_inside(output, path)
    return outcomes


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:  # gone since it was found: its loader reports that
        return None


def refuse_output_holding_input(output: Path, source: Path) -> None:
    """Raise ``UserError`` when the output folder ``output`` is the input folder ``source`` or holds the input: its
    masks would mix with the slices, and a later run would take them for inputs. An output folder inside the input
    folder is fine: its files are never taken for inputs."""
    source = source.resolve()
    if source == output:
        raise UserError(f"{output}: the output folder is the input folder; choose another folder for the masks")
    if source.is_relative_to(output):
        raise UserError(
            f"{output}: the output folder holds the input {source}; choose a folder outside the input for the masks"
        )


def refuse_shared_outputs(outcomes: dict[Path | str, InputOutcome]) -> None:
    """Raise ``UserError`` before anything is written when two inputs would write the same output file (``a.png``
    and ``a.nii.gz`` both give ``a_seg.nii.gz``), naming the file and the inputs."""
    claimed: dict[str, list[str]] = {}
    for outcome in outcomes.values():
        for output in outcome.outputs:
            claimed.setdefault(output, []).append(outcome.input)
    shared = {output: inputs for output, inputs in claimed.items() if len(inputs) > 1}
    if shared:
        output, inputs = next(iter(shared.items()))
        raise UserError(
            f"{output}: {' and '.join(inputs)} would all be written here ({len(shared)} such outputs); rename "
            "them or segment them into separate folders"
        )


def outputs_complete(outputs: Sequence[str], expected: tuple[int, ...] | None) -> bool:
    """Whether every file of ``outputs`` exists, decodes and has the ``expected`` shape (see :func:`output_fits`):
    a file copied in by hand, truncated, or made from another image is made again."""
    return all(output_fits(Path(output), expected) for output in outputs)


def output_fits(path: Path, expected: tuple[int, ...] | None) -> bool:
    """Whether the mask, probability map, overlay or SEG at ``path`` exists, its pixels decode and (unless
    ``expected`` is None) its shape is ``expected``, singleton dimensions aside."""
    if not path.is_file():
        return False
    try:
        shape = decoded_shape(path)
    except Exception:  # any fault to read it back means the output is not there to keep
        return False
    return expected is None or _squeezed(shape) == _squeezed(expected)


def decoded_shape(path: Path) -> tuple[int, ...]:
    """The shape of the image at ``path`` once decoded, in MONAI's layout (a PNG: width, height)."""
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        return tuple(nib.load(path).get_fdata().shape)
    if path.suffix.lower() == ".dcm":
        import pydicom

        return tuple(pydicom.dcmread(path).pixel_array.shape)
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return (image.width, image.height)


def declared_shape(path: Path) -> tuple[int, ...] | None:
    """The shape the header of the slice or volume file ``path`` declares, in MONAI's layout; None where it
    cannot be read (the input itself is then read, and reported, when it is segmented)."""
    name = path.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            return tuple(int(side) for side in nib.load(path).shape)
        if name.endswith(".mat"):
            from pipeline.data.figshare import stored_image_shape

            return stored_image_shape(path)
        from PIL import Image

        with Image.open(path) as image:
            return (image.width, image.height)
    except Exception:  # an unreadable input: its outputs cannot be checked against it
        return None


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(side) for side in shape if side != 1)


def earlier_record(output: Path) -> dict:
    """The record the earlier run into ``output`` left, which ``--continue`` needs to know which outputs it may keep.

    Raises ``UserError`` when there is none, or it cannot be read: outputs no record vouches for are never kept.
    """
    path = output / RECORD_NAME
    if not path.is_file():
        raise UserError(
            f"{output}: no {RECORD_NAME} here, so nothing says which outputs an earlier run made and how; "
            "--continue keeps only what a record vouches for: run without it (--overwrite to replace the files)"
        )
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(earlier["settings"], dict) or not isinstance(earlier["inputs"], list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{path}: cannot be read, so the earlier outputs' settings are unknown; run without --continue"
        ) from None
    return earlier


def earlier_settings_differ(earlier: dict, recorded: dict, weights_sha256: str | None) -> str | None:
    """What differs between this run (``recorded`` settings) and the ``earlier`` record, for every setting that
    changes an output: the named ones (:data:`MASK_SETTINGS`), every config key given as an override (except
    :data:`OUTPUT_NEUTRAL_OVERRIDES`), and the weights; None when they agree."""
    settings = earlier["settings"]
    for key in MASK_SETTINGS:
        if settings.get(key) != recorded.get(key):
            return f"{key} was {json.dumps(settings.get(key))}, now {json.dumps(recorded.get(key))}"
    then, now = settings.get("overrides") or {}, recorded.get("overrides") or {}
    for key in sorted({*then, *now} - OUTPUT_NEUTRAL_OVERRIDES):
        if then.get(key) != now.get(key):
            return f"--{key} was {_given(then, key)}, now {_given(now, key)}"
    earlier_weights = (earlier.get("weights") or {}).get("sha256")
    if earlier_weights != weights_sha256:
        return f"the weights differ (sha256 {earlier_weights} then, {weights_sha256} now)"
    return None


def vouched_outputs(earlier: dict) -> set[str]:
    """The outputs the ``earlier`` record marks written (or kept as complete): the only ones ``--continue`` keeps."""
    return {
        str(output)
        for entry in earlier["inputs"]
        if isinstance(entry, dict) and entry.get("status") in (WRITTEN, SKIPPED)
        for output in entry.get("outputs", [])
    }


def _given(overrides: dict, key: str) -> str:
    return json.dumps(overrides[key]) if key in overrides else "not given"
