"""Find how a source folder is laid out and pair every image with its mask.

Four layouts are recognised, by what the folder holds:

- ``mat-folder``: ``N.mat`` figshare slices, directly in the folder or one folder down (the four extracted
  ``brainTumorDataPublic_*`` folders), optionally with ``cvind.mat`` beside them;
- ``figshare-zips``: the figshare archives ``brainTumorDataPublic_*.zip`` (any ``*.zip``), optionally with
  ``cvind.mat``;
- ``image-file-pairs``: ``images/N.png`` with ``masks/N.png`` (or ``labels/``); JPEG files are refused, each
  with the reason (:func:`lossy_refusal`), as every command refuses them;
- ``nifti-pairs``: ``images/X.nii.gz`` with ``labels/X.nii.gz`` (or ``masks/``).

Notes and tables beside the data (``.csv``, ``.txt``, ``.md``, ``.json``) and hidden files are ignored; any
other file where the data lives is reported as an unknown extension.
"""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pipeline.data.errors import DatasetError

CVIND_NAME = "cvind.mat"
IMAGE_DIR_NAME = "images"
MASK_DIR_NAMES = ("masks", "labels")
MAT_SUFFIXES = (".mat",)
ARCHIVE_SUFFIXES = (".zip",)
IMAGE_FILE_SUFFIXES = (".png",)
# Lossy formats: their compression changes pixel values and blurs edges, in the image and in its mask alike, so no
# command reads them.
LOSSY_SUFFIXES = (".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
COMPANION_SUFFIXES = (".csv", ".txt", ".md", ".json")

UNKNOWN_TUMOR_TYPE = 0
UNKNOWN_TUMOR_TYPE_NAME = "unknown"


class LayoutKind(StrEnum):
    """The recognised source layouts."""

    MAT = "mat-folder"
    ZIPS = "figshare-zips"
    IMAGE_FILES = "image-file-pairs"
    NIFTI = "nifti-pairs"


LAYOUT_SUFFIXES = {
    LayoutKind.MAT: MAT_SUFFIXES,
    LayoutKind.ZIPS: ARCHIVE_SUFFIXES,
    LayoutKind.IMAGE_FILES: IMAGE_FILE_SUFFIXES,
    LayoutKind.NIFTI: NIFTI_SUFFIXES,
}


@dataclass(frozen=True)
class SourceLayout:
    """What ``discover_layout`` found.

    Args:
        kind: the layout.
        root: the source folder.
        images: the ``.mat`` files (``mat-folder``), the archives (``figshare-zips``) or the image files.
        masks: the mask files of a pairs layout (empty otherwise).
        strays: files with an extension the layout does not use, found where its data lives.
        cvind: the ``cvind.mat`` beside the data, if any.
    """

    kind: LayoutKind
    root: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...] = ()
    strays: tuple[Path, ...] = ()
    cvind: Path | None = None


@dataclass(frozen=True)
class SliceRecord:
    """One slice of the dataset: where its image and mask are, its tumour type and its patient.

    Args:
        slice_id: the file name without extension (``"12"`` for ``12.mat``; leading zeros of numbers dropped).
        image: the image file (for ``.mat`` slices the ``.mat`` file itself).
        label: the mask file (for ``.mat`` slices the same ``.mat`` file: a second reader picks the mask).
        tumor_type: the figshare tumour-type code, ``UNKNOWN_TUMOR_TYPE`` (0) where nothing says.
        pid: the patient id; the slice id where the patient is unknown.
        shape: the image's (rows, cols), once its content has been read.
    """

    slice_id: str
    image: Path
    label: Path
    tumor_type: int = UNKNOWN_TUMOR_TYPE
    pid: str = ""
    shape: tuple[int, ...] = ()


def normalize_slice_id(stem: str) -> str:
    """Return the slice id for a file stem or table index: numbers lose leading zeros (``"007"`` -> ``"7"``)."""
    stem = stem.strip()
    return str(int(stem)) if is_numbered(stem) else stem


def is_numbered(text: str) -> bool:
    """Whether ``text`` is a plain decimal number (ASCII digits only), like the figshare slice ids."""
    return text.isascii() and text.isdigit()


def slice_id_sort_key(slice_id: str) -> tuple[int, int, str]:
    """Sort numeric slice ids by value, before any non-numeric ones (sorted by text)."""
    return (0, int(slice_id), "") if is_numbered(slice_id) else (1, 0, slice_id)


def file_suffix(path: Path) -> str:
    """Return the lower-case extension, treating ``.nii.gz`` as one extension."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def file_stem(path: Path) -> str:
    """Return the file name without its extension (``.nii.gz`` counted as one)."""
    return path.name[: len(path.name) - len(file_suffix(path))]


def lossy_refusal(path: Path) -> str:
    """The line that refuses the JPEG file ``path``, with the reason and what to do."""
    return (
        f"{path}: JPEG is refused: its lossy compression changes pixel values and blurs the tumour's edge, in a "
        "slice and in its mask alike; save the slices as PNG or NIfTI from the original data"
    )


def is_fold_file(path: Path) -> bool:
    """Whether ``path`` is the figshare fold file ``cvind.mat``: a ``.mat`` beside the slices that is no slice."""
    return path.name == CVIND_NAME


def slice_datalist(folder: str | Path, suffixes: Sequence[str]) -> list[dict[str, str]]:
    """``[{"image": path}]`` for every visible file in ``folder`` whose name ends with one of ``suffixes`` (in any
    case), sorted by path, without the figshare fold file: the datalist ``configs/inference.json`` segments.

    A missing ``folder`` gives no slices: the config can then be built (model-zoo's checks build it with its
    placeholder ``dataset_dir``), and :func:`require_slices` refuses to run it.
    """
    if not Path(folder).is_dir():
        return []
    ends = tuple(suffix.lower() for suffix in suffixes)
    return [
        {"image": str(path)}
        for path in sorted(Path(folder).iterdir(), key=str)
        if path.is_file()
        and not path.name.startswith(".")
        and path.name.lower().endswith(ends)
        and not is_fold_file(path)
    ]


def require_slices(datalist: Sequence[Mapping[str, str]], folder: str | Path) -> None:
    """Raise ``DatasetError`` when ``datalist`` (the slices ``configs/inference.json`` is to segment) is empty,
    naming ``folder`` (its ``dataset_dir``)."""
    if not datalist:
        where = "no such folder" if not Path(folder).is_dir() else "no .mat/.png/.nii/.nii.gz slices in it"
        raise DatasetError([f"{folder}: nothing to segment ({where}); set dataset_dir to a folder of slices"])


def discover_layout(src: Path, exclude: Sequence[Path] = ()) -> SourceLayout:
    """Find the layout of ``src``; raise ``DatasetError`` when it is missing, empty, unrecognised or ambiguous.

    ``exclude`` lists folders to ignore (the output folders, when they live inside the source).
    """
    src = Path(src)
    if not src.is_dir():
        raise DatasetError([f"{src}: {'not a folder' if src.exists() else 'no such folder'}"])
    excluded = {Path(folder).resolve() for folder in exclude}
    children = [child for child in _visible(src) if child.resolve() not in excluded]
    if not children:
        raise DatasetError([f"{src}: empty folder"])

    files = [child for child in children if child.is_file()]
    folders = {child.name: child for child in children if child.is_dir()}
    cvind = src / CVIND_NAME if (src / CVIND_NAME).is_file() else None
    archives = [path for path in files if file_suffix(path) in ARCHIVE_SUFFIXES]
    mat_folders = [src] + [folder for name, folder in folders.items() if name not in (IMAGE_DIR_NAME, *MASK_DIR_NAMES)]
    mats = [path for folder in mat_folders for path in _visible(folder) if _is_slice_mat(path)]
    image_dir = folders.get(IMAGE_DIR_NAME)
    found = [
        name for name, present in (("N.mat files", mats), ("zip archives", archives), ("images/", image_dir)) if present
    ]
    if len(found) > 1:
        raise DatasetError(
            [f"{src}: ambiguous layout, found {' and '.join(found)}; keep one kind of source per folder"]
        )

    if mats:
        strays = _strays(sorted({src, *(path.parent for path in mats)}), MAT_SUFFIXES)
        return SourceLayout(LayoutKind.MAT, src, tuple(mats), strays=strays, cvind=cvind)
    if archives:
        strays = _strays([src], ARCHIVE_SUFFIXES + MAT_SUFFIXES)
        return SourceLayout(LayoutKind.ZIPS, src, tuple(archives), strays=strays, cvind=cvind)
    slice_suffixes = IMAGE_FILE_SUFFIXES + LOSSY_SUFFIXES + NIFTI_SUFFIXES
    loose_images = [path for path in files if file_suffix(path) in slice_suffixes]
    if image_dir is None and loose_images:
        raise DatasetError(
            [
                f"{src}: {len(loose_images)} image files but no {IMAGE_DIR_NAME}/ folder: put the images in "
                f"{src / IMAGE_DIR_NAME}/ and their masks, of the same names, in {src / MASK_DIR_NAMES[0]}/ "
                "(or labels/), and give the tumour type and patient of each slice with --meta CSV"
            ]
        )
    if image_dir is None:
        raise DatasetError(
            [
                f"{src}: unrecognised layout: expected N.mat files, brainTumorDataPublic_*.zip archives, "
                f"or images/ with masks/ (or labels/)"
            ]
        )
    return _pairs_layout(src, image_dir, [folders[name] for name in MASK_DIR_NAMES if name in folders])


def pair_slices(layout: SourceLayout) -> tuple[list[SliceRecord], list[str]]:
    """Pair images with masks by slice id; return the pairs and one line per problem found.

    Problems: an image without a mask, a mask without an image, two files with the same slice id, and every
    stray file of the layout (unknown extension).
    """
    problems = stray_problems(layout)
    images, image_problems = _by_slice_id(layout.images)
    problems += image_problems
    if layout.kind is LayoutKind.MAT:
        records = [SliceRecord(slice_id, path, path) for slice_id, path in images.items()]
        return _sorted(records), sorted(problems)
    masks, mask_problems = _by_slice_id(layout.masks)
    problems += mask_problems
    problems += [f"{images[key]}: image without a mask" for key in images.keys() - masks.keys()]
    problems += [f"{masks[key]}: mask without an image" for key in masks.keys() - images.keys()]
    records = [SliceRecord(key, images[key], masks[key]) for key in images.keys() & masks.keys()]
    return _sorted(records), sorted(problems)


def stray_problems(layout: SourceLayout) -> list[str]:
    """One line per stray file of ``layout``: its path and its unknown extension."""
    expected = f"a {layout.kind.value} layout takes {', '.join(LAYOUT_SUFFIXES[layout.kind])}"
    return [
        lossy_refusal(path)
        if file_suffix(path) in LOSSY_SUFFIXES
        else f"{path}: unknown extension {file_suffix(path) or '(none)'!r} ({expected})"
        for path in layout.strays
    ]


def _pairs_layout(src: Path, image_dir: Path, mask_dirs: list[Path]) -> SourceLayout:
    if not mask_dirs:
        raise DatasetError([f"{image_dir}: no masks/ (or labels/) folder beside it"])
    if len(mask_dirs) > 1:
        raise DatasetError([f"{src}: ambiguous layout, both masks/ and labels/ found; keep one"])
    mask_dir = mask_dirs[0]
    image_files = [path for path in _visible(image_dir) if path.is_file()]
    if not image_files:
        raise DatasetError([f"{image_dir}: empty folder"])
    suffixes = Counter(file_suffix(path) for path in image_files)
    nifti_count = sum(suffixes[suffix] for suffix in NIFTI_SUFFIXES)
    image_file_count = sum(suffixes[suffix] for suffix in IMAGE_FILE_SUFFIXES + LOSSY_SUFFIXES)
    if not nifti_count and not image_file_count:
        raise DatasetError(
            [f"{image_dir}: unrecognised layout: no {', '.join(IMAGE_FILE_SUFFIXES + NIFTI_SUFFIXES)} files"]
        )
    kind = LayoutKind.NIFTI if nifti_count > image_file_count else LayoutKind.IMAGE_FILES
    allowed = LAYOUT_SUFFIXES[kind]
    mask_files = [path for path in _visible(mask_dir) if path.is_file()]
    strays = tuple(path for path in image_files + mask_files if file_suffix(path) not in allowed)
    return SourceLayout(
        kind,
        src,
        tuple(path for path in image_files if path not in strays),
        tuple(path for path in mask_files if path not in strays),
        strays=strays,
    )


def _visible(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def _is_slice_mat(path: Path) -> bool:
    return path.is_file() and file_suffix(path) in MAT_SUFFIXES and not is_fold_file(path)


def _strays(folders: list[Path], allowed: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(
        path
        for folder in folders
        for path in _visible(folder)
        if path.is_file() and file_suffix(path) not in allowed + COMPANION_SUFFIXES
    )


def _by_slice_id(paths: tuple[Path, ...]) -> tuple[dict[str, Path], list[str]]:
    by_id: dict[str, Path] = {}
    problems = []
    for path in paths:
        slice_id = normalize_slice_id(file_stem(path))
        if slice_id in by_id:
            problems.append(f"{path}: duplicate slice id {slice_id!r} (also {by_id[slice_id]})")
        else:
            by_id[slice_id] = path
    return by_id, problems


def _sorted(records: list[SliceRecord]) -> list[SliceRecord]:
    return sorted(records, key=lambda record: slice_id_sort_key(record.slice_id))
