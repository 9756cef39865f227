"""Split slices into training, validation and test sets without putting a patient in two of them.

Two rules, both patient-wise: ``split_by_patient`` draws patients at random (seeded), stratified by tumour type,
in the given fractions of patients; ``split_by_folds`` uses given folds (the dataset author's ``cvind.mat``, or a
table's fold column), one fold for validation, one for test and the rest for training.
"""

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.data.errors import DatasetError
from pipeline.data.sources import SliceRecord, slice_id_sort_key

SET_NAMES = ("training", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

Sets = dict[str, list[SliceRecord]]


def split_by_patient(
    records: Sequence[SliceRecord], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> Sets:
    """Assign whole patients to training/validation/test in ``fractions`` of the patients, per tumour type.

    The number of patients per set is apportioned over all patients first (largest remainder), then over
    the tumour types in proportion to their patient counts, so every type is represented as evenly as whole
    patients allow. Which patients go where is drawn with ``numpy.random.default_rng(seed)``; the same
    records and seed always give the same sets, whatever the order of ``records``.
    """
    check_fractions(fractions)
    patient_type = {record.pid: record.tumor_type for record in records}
    strata: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(patient_type):
        strata[patient_type[pid]].append(pid)
    types = sorted(strata)
    rng = np.random.default_rng(seed)
    counts = _allocate([len(strata[code]) for code in types], fractions, rng)
    set_of_patient: dict[str, str] = {}
    for code, row in zip(types, counts, strict=True):
        patients = [strata[code][index] for index in rng.permutation(len(strata[code]))]
        start = 0
        for name, count in zip(SET_NAMES, row, strict=True):
            set_of_patient.update((pid, name) for pid in patients[start : start + count])
            start += count
    return _collect(records, lambda record: set_of_patient[record.pid])


def split_by_folds(
    records: Sequence[SliceRecord],
    folds: Mapping[str, int],
    val_fold: int | None = None,
    test_fold: int | None = None,
    source: str = "folds",
) -> Sets:
    """Put the slices of fold ``val_fold`` in validation, of ``test_fold`` in test, and all others in training.

    ``folds`` maps slice id to fold. Without ``test_fold`` the test set is empty (and likewise for
    validation). Raises ``DatasetError`` (lines start with ``source``) when a slice has no fold, a patient
    spans two folds, a requested fold holds no slices, the two folds are the same, or nothing is left for
    training.
    """
    if val_fold is None and test_fold is None:
        raise DatasetError([f"{source}: choose a validation fold and/or a test fold"])
    if val_fold is not None and val_fold == test_fold:
        raise DatasetError([f"{source}: validation and test fold are both {val_fold}; choose two different folds"])
    problems = [
        f"{source}: slice {record.slice_id!r} has no fold" for record in records if record.slice_id not in folds
    ]
    if problems:
        raise DatasetError(problems)
    patient_folds: dict[str, set[int]] = defaultdict(set)
    for record in records:
        patient_folds[record.pid].add(folds[record.slice_id])
    problems = [
        f"{source}: patient {pid!r} spans folds {sorted(spanned)}; folds must keep each patient in one fold"
        for pid, spanned in sorted(patient_folds.items())
        if len(spanned) > 1
    ]
    present = sorted({folds[record.slice_id] for record in records})
    problems += [
        f"{source}: {role} fold {fold} holds no slices (folds present: {present})"
        for role, fold in (("validation", val_fold), ("test", test_fold))
        if fold is not None and fold not in present
    ]
    if not set(present) - {val_fold, test_fold}:
        problems.append(f"{source}: no fold is left for training (folds present: {present})")
    if problems:
        raise DatasetError(problems)
    role_of_fold = {val_fold: "validation", test_fold: "test"}
    return _collect(records, lambda record: role_of_fold.get(folds[record.slice_id], "training"))


def check_enough_patients(patients: int, fractions: Sequence[float]) -> None:
    """Raise ``DatasetError`` when ``split_by_patient`` of ``patients`` in ``fractions`` leaves a set empty.

    A set with a fraction of 0 is meant to be empty and is no fault. The one line names the sets that would be
    empty and the fewest patients that fill them all.
    """
    empty = _empty_sets(patients, fractions)
    if not empty:
        return
    enough = math.ceil(1 / min(fraction for fraction in fractions if fraction > 0)) + 1  # every share then >= 1
    needed = next(count for count in range(patients + 1, enough + 1) if not _empty_sets(count, fractions))
    raise DatasetError(
        [
            f"{patients} patients are too few for the fractions {list(fractions)}: the {' and '.join(empty)} "
            f"{'set' if len(empty) == 1 else 'sets'} would be empty; at least {needed} patients are needed "
            "(or give a set you do not want a fraction of 0 with --fractions)"
        ]
    )


def _empty_sets(patients: int, fractions: Sequence[float]) -> list[str]:
    sizes = _largest_remainder(patients, fractions)
    return [name for name, size, fraction in zip(SET_NAMES, sizes, fractions, strict=True) if fraction > 0 and not size]


def check_fractions(fractions: Sequence[float]) -> None:
    """Raise ``DatasetError`` unless ``fractions`` are three non-negative numbers summing to 1, training above 0."""
    if len(fractions) != len(SET_NAMES) or any(not math.isfinite(f) or f < 0 for f in fractions):
        raise DatasetError(
            [f"fractions {list(fractions)} must be three non-negative numbers (training, validation, test)"]
        )
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6) or fractions[0] <= 0:
        raise DatasetError([f"fractions {list(fractions)} must sum to 1 with a positive training fraction"])


def _collect(records: Sequence[SliceRecord], set_of) -> Sets:
    sets: Sets = {name: [] for name in SET_NAMES}
    for record in sorted(records, key=lambda record: slice_id_sort_key(record.slice_id)):
        sets[set_of(record)].append(record)
    return sets


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Whole numbers proportional to ``weights`` that sum to ``total`` (ties go to the earlier weight)."""
    weight_sum = sum(weights)
    ideal = [total * weight / weight_sum for weight in weights]
    counts = [math.floor(value) for value in ideal]
    by_remainder = sorted(range(len(weights)), key=lambda index: (counts[index] - ideal[index], index))
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def _allocate(stratum_sizes: Sequence[int], fractions: Sequence[float], rng: np.random.Generator) -> list[list[int]]:
    """Patients per (stratum, set): rows sum to the stratum sizes, columns to the apportioned set sizes.

    Start from the floor of the proportional share of every cell, then hand out the remaining patients cell by
    cell, largest fractional share first (random order among equal shares), at most one extra per cell, then
    wherever rows and columns still need them.
    """
    total = sum(stratum_sizes)
    set_sizes = _largest_remainder(total, fractions)
    ideal = [[size * set_size / total for set_size in set_sizes] for size in stratum_sizes]
    counts = [[math.floor(value) for value in row] for row in ideal]
    row_left = [size - sum(row) for size, row in zip(stratum_sizes, counts, strict=True)]
    column_left = [
        set_size - sum(column) for set_size, column in zip(set_sizes, zip(*counts, strict=True), strict=True)
    ]
    ties = rng.random((len(stratum_sizes), len(set_sizes)))
    cells = sorted(
        ((row, column) for row in range(len(stratum_sizes)) for column in range(len(set_sizes))),
        key=lambda cell: (counts[cell[0]][cell[1]] - ideal[cell[0]][cell[1]], ties[cell]),
    )
    for cap in (1, math.inf):
        for row, column in cells:
            extra = min(row_left[row], column_left[column], cap)
            counts[row][column] += extra
            row_left[row] -= extra
            column_left[column] -= extra
    return counts
