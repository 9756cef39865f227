"""Patient-wise splits: fractions stratified by tumour type, and the dataset author's folds."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.errors import DatasetError
from pipeline.data.sources import SliceRecord
from pipeline.data.split import SET_NAMES, check_enough_patients, check_fractions, split_by_folds, split_by_patient


def make_records(patients: list[tuple[str, int, int]]) -> list[SliceRecord]:
    """Records for (pid, tumour type, number of slices) triples, slice ids numbered across patients."""
    records = []
    for pid, tumor_type, slices in patients:
        for _ in range(slices):
            slice_id = str(len(records) + 1)
            path = Path(f"{slice_id}.mat")
            records.append(SliceRecord(slice_id, path, path, tumor_type=tumor_type, pid=pid))
    return records


def patients_of(records: list[SliceRecord]) -> set[str]:
    return {record.pid for record in records}


def cohort(per_type: int, slices: int = 3) -> list[SliceRecord]:
    return make_records([(f"P{code}{index:03d}", code, slices) for code in (1, 2, 3) for index in range(per_type)])


@settings(max_examples=40, deadline=None)
@given(
    patients=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 6)), min_size=1, max_size=40),
    seed=st.integers(0, 2**31),
)
def test_split_never_puts_a_patient_in_two_sets(patients, seed):
    records = make_records([(f"MR{index:06d}", code, slices) for index, (code, slices) in enumerate(patients)])
    sets = split_by_patient(records, seed=seed)
    assert sorted(record.slice_id for name in SET_NAMES for record in sets[name]) == sorted(
        record.slice_id for record in records
    )
    for first, second in ((0, 1), (0, 2), (1, 2)):
        assert not patients_of(sets[SET_NAMES[first]]) & patients_of(sets[SET_NAMES[second]])


def test_split_is_the_same_for_a_seed_whatever_the_order_of_the_records():
    records = cohort(per_type=7)
    first = split_by_patient(records, seed=3)
    second = split_by_patient(list(reversed(records)), seed=3)
    assert first == second


def test_split_changes_with_the_seed():
    records = cohort(per_type=7)
    draws = {tuple(sorted(patients_of(split_by_patient(records, seed=seed)["test"]))) for seed in range(5)}
    assert len(draws) > 1


def test_split_is_stratified_by_tumour_type():
    records = cohort(per_type=20)
    fractions = (0.7, 0.2, 0.1)
    sets = split_by_patient(records, fractions=fractions, seed=1)
    for name, fraction in zip(SET_NAMES, fractions, strict=True):
        for code in (1, 2, 3):
            count = len({record.pid for record in sets[name] if record.tumor_type == code})
            assert abs(count - fraction * 20) < 1, (name, code, count)


def test_split_set_sizes_follow_the_fractions_of_patients():
    records = make_records([(f"{index}", 1 + index % 3, 1 + index % 4) for index in range(53)])
    sets = split_by_patient(records, seed=0)
    for name, fraction in zip(SET_NAMES, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(patients_of(sets[name])) - fraction * 53) < 1


def test_split_gives_every_tumour_type_to_training_with_few_patients():
    sets = split_by_patient(cohort(per_type=3), seed=0)
    assert {record.tumor_type for record in sets["training"]} == {1, 2, 3}


def test_fold_split_reproduces_the_given_folds():
    records = cohort(per_type=5, slices=2)
    patients = sorted(patients_of(records))
    fold_of_patient = {pid: 1 + index % 5 for index, pid in enumerate(patients)}
    folds = {record.slice_id: fold_of_patient[record.pid] for record in records}
    sets = split_by_folds(records, folds, val_fold=4, test_fold=5)
    assert {folds[record.slice_id] for record in sets["validation"]} == {4}
    assert {folds[record.slice_id] for record in sets["test"]} == {5}
    assert {folds[record.slice_id] for record in sets["training"]} == {1, 2, 3}
    assert sum(len(sets[name]) for name in SET_NAMES) == len(records)


def test_fold_split_without_a_test_fold_leaves_the_test_set_empty():
    records = cohort(per_type=4)
    folds = {record.slice_id: 1 + int(record.pid[-3:]) % 4 for record in records}
    sets = split_by_folds(records, folds, val_fold=4)
    assert sets["test"] == []
    assert {folds[record.slice_id] for record in sets["training"]} == {1, 2, 3}


def test_fold_split_refuses_a_patient_spread_over_two_folds():
    records = make_records([("100360", 1, 2), ("MR048294", 2, 2)])
    folds = {"1": 1, "2": 2, "3": 3, "4": 3}
    with pytest.raises(DatasetError, match=r"cvind\.mat: patient '100360' spans folds \[1, 2\]"):
        split_by_folds(records, folds, val_fold=3, source="cvind.mat")


@pytest.mark.parametrize(
    ("val_fold", "test_fold", "fault"),
    [(2, 2, "both 2"), (7, None, "validation fold 7 holds no slices"), (1, 2, "no fold is left for training")],
)
def test_fold_split_refuses_unusable_fold_choices(val_fold, test_fold, fault):
    records = make_records([("a", 1, 1), ("b", 2, 1)])
    with pytest.raises(DatasetError, match=fault):
        split_by_folds(records, {"1": 1, "2": 2}, val_fold=val_fold, test_fold=test_fold)


def test_fold_split_names_slices_without_a_fold():
    records = make_records([("a", 1, 2)])
    with pytest.raises(DatasetError, match="slice '2' has no fold"):
        split_by_folds(records, {"1": 1}, val_fold=1)


@pytest.mark.parametrize("fractions", [(0.8, 0.1), (0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_fractions_must_be_three_shares_summing_to_one(fractions):
    with pytest.raises(ValueError, match="fractions"):
        check_fractions(fractions)


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.6, 0.4, 0.0), (0.98, 0.01, 0.01)])
def test_the_patients_a_refusal_asks_for_are_the_fewest_that_fill_every_set_asked_for(fractions):
    with pytest.raises(DatasetError, match="would be empty") as refusal:
        check_enough_patients(1, fractions)
    needed = int(re.search(r"at least (\d+) patients", str(refusal.value))[1])
    with pytest.raises(DatasetError, match="would be empty"):
        check_enough_patients(needed - 1, fractions)
    check_enough_patients(needed, fractions)
    sets = split_by_patient(make_records([(f"P{index}", 1, 1) for index in range(needed)]), fractions)
    assert [bool(sets[name]) for name in SET_NAMES] == [fraction > 0 for fraction in fractions]
