"""Turn a source folder into a dataset folder with a patient-wise ``datalist.json``: the work of ``prepare``."""

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pipeline.data.archives import extract_slice_archives
from pipeline.data.datalist import DATALIST_NAME, build_datalist, relative_path, write_datalist
from pipeline.data.errors import DatasetError
from pipeline.data.figshare import FigshareFormatError, read_cvind
from pipeline.data.meta import META_FOLDS, MetaTable, read_meta_csv
from pipeline.data.nifti import NIFTI_IMAGE_DIR, NIFTI_LABEL_DIR, convert_slices
from pipeline.data.sources import (
    CVIND_NAME,
    LayoutKind,
    SliceRecord,
    SourceLayout,
    discover_layout,
    is_numbered,
    pair_slices,
    stray_problems,
)
from pipeline.data.split import (
    DEFAULT_FRACTIONS,
    SET_NAMES,
    check_enough_patients,
    check_fractions,
    split_by_folds,
    split_by_patient,
)
from pipeline.data.validation import BINARIZED_MASK_DIR, binarize_masks, inspect_slices, read_pair
from pipeline.inference.discovery import not_a_regular_file
from pipeline.outputs import own_subfolder

logger = logging.getLogger(__name__)

RAW_DIR = "raw"
LEAK_WARNING = (
    "patient ids are unknown, so the split is by slice: slices of one patient can land in both training and "
    "test, which leaks the patient and inflates the scores. Pass --meta with a 'pid' column to split by patient."
)


def prepare_dataset(
    src: Path,
    dataset_dir: Path,
    *,
    meta: Path | None = None,
    folds: str | Path | None = None,
    val_fold: int | None = None,
    test_fold: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    binarize: bool = False,
    to_nifti: bool = False,
) -> dict[str, Any]:
    """Check every slice of ``src``, split it and write ``dataset_dir/datalist.json``; return the datalist.

    The layout of ``src`` is detected (see ``pipeline.data.sources``); archives are extracted into
    ``dataset_dir/raw``. Folds are used when ``val_fold`` or ``test_fold`` is given, read from ``folds`` (a
    ``cvind.mat`` path, or ``"meta"`` for the meta table's fold column), by default from the ``cvind.mat``
    beside the data, else from the meta table; otherwise patients are drawn in ``fractions`` with ``seed``.
    Every bad file or option is reported in one ``DatasetError``, and then no datalist is written.
    """
    src, dataset_dir = Path(src), Path(dataset_dir)
    check_fractions(fractions)
    use_folds = val_fold is not None or test_fold is not None
    if folds is not None and not use_folds:
        raise DatasetError(["folds given without --val-fold or --test-fold: say which fold is validation and/or test"])

    # The folders prepare writes, never read as source data; the dataset folder itself may be one of the source's.
    raw_dir = own_subfolder(dataset_dir, RAW_DIR)
    binarized_dir = own_subfolder(dataset_dir, BINARIZED_MASK_DIR)
    for nifti_dir in (NIFTI_IMAGE_DIR, NIFTI_LABEL_DIR):
        own_subfolder(dataset_dir, *nifti_dir.parts)
    outputs = (raw_dir, dataset_dir / NIFTI_IMAGE_DIR.parent, binarized_dir)
    layout = discover_layout(src, exclude=outputs)
    problems: list[str] = []
    table = None
    if meta is not None:
        try:
            table = read_meta_csv(meta)
        except DatasetError as error:
            problems += error.problems
    if layout.kind is LayoutKind.ZIPS:
        layout, archive_problems = _extract(layout, raw_dir)
        problems += archive_problems
    if table is not None and layout.kind is LayoutKind.MAT:
        logger.info("%s: .mat slices carry their own tumour type and patient; the table serves only its folds", meta)
    records, pair_problems = pair_slices(layout)
    records, content_problems = inspect_slices(records, layout.kind, table, binarize)
    problems += pair_problems + content_problems
    if not records and not problems:
        problems.append(f"{src}: no slices found")
    fold_of: dict[str, int] = {}
    fold_source = ""
    if use_folds:
        try:
            fold_of, fold_source = _read_folds(folds, layout, table, records)
        except DatasetError as error:
            problems += error.problems
    if problems:
        raise DatasetError(problems)

    patients_known = layout.kind is LayoutKind.MAT or (table is not None and table.has_pid)
    if not patients_known:
        banner = "!" * 100
        logger.warning("%s\nWARNING: %s\n%s", banner, LEAK_WARNING, banner)
    sets, split = _split(records, fold_of, fold_source, val_fold, test_fold, fractions, seed, patients_known)
    split = {"layout": layout.kind.value, "source": relative_path(src, dataset_dir), **split}
    if fold_source:
        split["fold_source"] = relative_path(Path(fold_source), dataset_dir)
    if binarize:
        sets = {name: binarize_masks(sets[name], layout.kind, binarized_dir) for name in SET_NAMES}
    binarized = sum(record.label.parent == binarized_dir for records in sets.values() for record in records)
    split |= {"patients_known": patients_known, "binarized_masks": binarized, "nifti": False}
    if to_nifti and layout.kind is not LayoutKind.NIFTI:
        sets = _convert(sets, dataset_dir, layout.kind)
        split["nifti"] = True
    datalist = build_datalist(sets, dataset_dir, split)
    write_datalist(datalist, dataset_dir / DATALIST_NAME)
    return datalist


def _split(
    records: Sequence[SliceRecord],
    fold_of: Mapping[str, int],
    fold_source: str,
    val_fold: int | None,
    test_fold: int | None,
    fractions: Sequence[float],
    seed: int,
    patients_known: bool,
) -> tuple[dict[str, list[SliceRecord]], dict[str, Any]]:
    if fold_source:
        sets = split_by_folds(records, fold_of, val_fold, test_fold, source=fold_source)
        training_folds = sorted({fold_of[record.slice_id] for record in sets["training"]})
        return sets, {
            "method": "folds",
            "validation_fold": val_fold,
            "test_fold": test_fold,
            "training_folds": training_folds,
        }
    check_enough_patients(len({record.pid for record in records}), fractions)
    sets = split_by_patient(records, fractions, seed)
    method = "patient-wise" if patients_known else "slice-wise"
    return sets, {"method": method, "stratified_by": "tumor_type", "seed": seed, "fractions": list(fractions)}


def _extract(layout: SourceLayout, raw_dir: Path) -> tuple[SourceLayout, list[str]]:
    files, problems = extract_slice_archives(layout.images, raw_dir)
    packed_cvind = [path for path in files if path.name == CVIND_NAME]
    slices = tuple(path for path in files if path.name != CVIND_NAME)
    cvind = layout.cvind or (packed_cvind[0] if packed_cvind else None)
    return SourceLayout(LayoutKind.MAT, layout.root, slices, cvind=cvind), stray_problems(layout) + problems


def _read_folds(
    folds: str | Path | None, layout: SourceLayout, table: MetaTable | None, records: Sequence[SliceRecord]
) -> tuple[dict[str, int], str]:
    if folds is None:
        if layout.cvind is not None:
            folds = layout.cvind
        elif table is not None and table.has_fold:
            folds = META_FOLDS
        else:
            raise DatasetError(
                [f"{layout.root}: no folds to choose from: pass --folds cvind.mat, or --meta with a 'fold' column"]
            )
    if str(folds) == META_FOLDS:
        if table is None or not table.has_fold:
            raise DatasetError(
                [f"{table.path if table else layout.root}: --folds meta needs a --meta table with a 'fold' column"]
            )
        return {slice_id: row.fold for slice_id, row in table.rows.items()}, str(table.path)
    if Path(folds).exists() and (kind := not_a_regular_file(Path(folds))):
        raise DatasetError([f"{folds}: not a regular file ({kind}); it is not opened"])
    try:
        cvind = read_cvind(Path(folds))
    except (FigshareFormatError, OSError) as error:
        raise DatasetError([str(error) if str(error).startswith(str(folds)) else f"{folds}: {error}"]) from None
    # cvind entry i is the fold of slice i.mat (entry 1 at index 0).
    numbered = [int(record.slice_id) for record in records if is_numbered(record.slice_id)]
    fold_of = {str(number): int(cvind[number - 1]) for number in numbered if 1 <= number <= len(cvind)}
    return fold_of, str(folds)


def _convert(
    sets: Mapping[str, Sequence[SliceRecord]], dataset_dir: Path, kind: LayoutKind
) -> dict[str, list[SliceRecord]]:
    return {name: convert_slices(sets[name], dataset_dir, partial(read_pair, kind=kind)) for name in SET_NAMES}
