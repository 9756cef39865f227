"""What ``infer`` segments: the 2D slices, 3D NIfTI volumes and DICOM series at an input path, and the files it
leaves out, each with the reason."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.data.sources import NIFTI_SUFFIXES
from pipeline.user_errors import UserError

if TYPE_CHECKING:
    from pipeline.dicom.series import DicomSeries


@dataclass
class Inputs:
    """What ``infer`` found at its input path, by kind, the files it leaves out (unusable, each with the reason),
    and the files it skips on purpose (``notes``, e.g. the figshare fold file: not a failure)."""

    slices: list[Path] = field(default_factory=list)
    volumes: list[Path] = field(default_factory=list)
    dicom: list[Path] = field(default_factory=list)
    left_out: dict[Path, str] = field(default_factory=dict)
    notes: dict[Path, str] = field(default_factory=dict)


def find_inputs(path: Path, suffixes: Sequence[str], recursive: bool = False, exclude: Path | None = None) -> Inputs:
    """The inputs at ``path`` (one file, the files of a folder, or of its whole tree when ``recursive``) by kind:
    2D slices (``suffixes``, NIfTI of two dimensions), 3D NIfTI volumes and DICOM files, and the files left out,
    each with a line saying why (a JPEG file: its lossy compression, as every command refuses it). The figshare
    fold file ``cvind.mat`` is no slice: it goes to ``notes``, skipped without fault. Files under ``exclude``
    (the output folder) and hidden files are ignored.

    Raises ``UserError`` when ``path`` does not exist.
    """
    from pipeline.data.sources import CVIND_NAME, LOSSY_SUFFIXES, is_fold_file, lossy_refusal
    from pipeline.dicom.series import is_dicom_file
    from pipeline.inference.scans import volume_dimensions

    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if not path.is_dir():
        files = [path]
    else:
        entries = path.rglob("*") if recursive else path.iterdir()
        files = sorted(
            entry
            for entry in entries
            if not entry.is_dir()
            and not entry.name.startswith(".")
            and (exclude is None or not entry.resolve().is_relative_to(exclude))
        )
    found = Inputs()
    for file in files:
        name = file.name.lower()
        if kind := not_a_regular_file(file):
            found.notes[file] = f"{file}: not a regular file ({kind}); skipped"
        elif is_fold_file(file):
            found.notes[file] = f"{file}: the figshare fold file ({CVIND_NAME}), no slice; skipped"
        elif name.endswith(LOSSY_SUFFIXES):  # refused with the reason, even where --input_suffixes names it
            found.left_out[file] = lossy_refusal(file)
        elif name.endswith(NIFTI_SUFFIXES):
            try:
                dimensions = volume_dimensions(file)
            except Exception:  # not a readable NIfTI header: the slice loader reports what is wrong with the file
                dimensions = ()
            if len(dimensions) <= 2:
                found.slices.append(file)
            elif len(dimensions) == 3:
                found.volumes.append(file)
            else:
                found.left_out[file] = (
                    f"{file}: a {len(dimensions)}D NIfTI of shape {dimensions}; infer segments 2D slices and 3D "
                    "volumes: split it into 3D volumes first"
                )
        elif name.endswith(tuple(suffixes)):
            found.slices.append(file)
        elif is_dicom_file(file):
            found.dicom.append(file)
        else:
            found.left_out[file] = f"{file}: unsupported type; infer reads {', '.join(suffixes)} and DICOM files"
    return found


def not_a_regular_file(path: Path) -> str:
    """What ``path`` is when it is no regular file once links are followed (``a character device``, ``a named
    pipe``, ``a link to nothing``...), which a reader could block on or read forever; empty for a regular file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a link to nothing" if path.is_symlink() else "unreadable"
    kinds = (
        (stat.S_ISREG, ""),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def read_series(
    path: Path, dicom_files: Sequence[Path], recursive: bool = False, exclude: Path | None = None
) -> tuple[list[DicomSeries], list[str]]:
    """The DICOM series at ``path`` and the lines of the files and series that could not be used (none of them
    under ``exclude``), when ``dicom_files`` holds any file; else nothing."""
    from pipeline.dicom.series import read_dicom_folder

    if not dicom_files:
        return [], []
    series, failures = read_dicom_folder(path, recursive=recursive)
    if exclude is not None:
        series = [item for item in series if not any(file.resolve().is_relative_to(exclude) for file in item.files)]
        failures = [line for line in failures if not Path(line.split(": ", 1)[0]).resolve().is_relative_to(exclude)]
    return series, failures


def nothing_to_segment(path: Path, reasons: Sequence[str], recursive: bool) -> str:
    """The one error of an input holding nothing ``infer`` can segment, with each file's (or series') reason."""
    what = "2D slices, 3D NIfTI volumes and DICOM series"
    if reasons:
        return f"{path}: nothing to segment; infer reads {what}, and none of these could be used:" + "".join(
            f"\n  {line}" for line in reasons
        )
    if not recursive and path.is_dir() and any(entry.is_file() for entry in path.rglob("*")):
        return f"{path}: nothing to segment in this folder, only in its subfolders: add --recursive"
    return f"{path}: nothing to segment (no files); infer reads {what}"
