"""Read the per-slice table that gives image files their tumour type, patient id and fold.

The table is a CSV with a header and the columns ``index`` (the slice id: ``N`` for ``N.png``) and any of
``label`` (tumour-type code), ``label_name``, ``pid`` (patient id, kept as a string) and ``fold``.
"""

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.errors import DatasetError
from pipeline.data.sources import normalize_slice_id
from pipeline.data.tumor_types import TUMOR_TYPES, tumor_type_name

INDEX_COLUMN = "index"
# The --folds value that takes the folds from the meta table's fold column.
META_FOLDS = "meta"


@dataclass(frozen=True)
class MetaRow:
    """What the table says about one slice; ``None`` where the table has no such column."""

    tumor_type: int | None
    pid: str | None
    fold: int | None


@dataclass(frozen=True)
class MetaTable:
    """A parsed table: ``rows`` maps the slice id to its row."""

    path: Path
    rows: dict[str, MetaRow]
    has_tumor_type: bool
    has_pid: bool
    has_fold: bool


def read_meta_csv(path: Path) -> MetaTable:
    """Read and check a meta CSV; raise ``DatasetError`` listing every bad row (each as ``path:line: fault``)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            raw_rows = [{key.strip(): (value or "").strip() for key, value in row.items() if key} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError([f"{path}: cannot be read as a CSV table ({error})"]) from None
    if INDEX_COLUMN not in columns:
        raise DatasetError([f"{path}: no '{INDEX_COLUMN}' column (found {columns or 'no header'})"])

    has_tumor_type, has_pid, has_fold = "label" in columns, "pid" in columns, "fold" in columns
    problems: list[str] = []
    rows: dict[str, MetaRow] = {}
    first_line: dict[str, int] = {}
    patient_types: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for line, raw in enumerate(raw_rows, start=2):
        where = f"{path}:{line}"
        row_problems: list[str] = []
        index = raw.get(INDEX_COLUMN, "")
        if not index:
            row_problems.append(f"{where}: empty '{INDEX_COLUMN}'")
        tumor_type = _parse_tumor_type(raw, where, row_problems) if has_tumor_type else None
        pid = raw.get("pid", "") if has_pid else None
        if has_pid and not pid:
            row_problems.append(f"{where}: empty 'pid'")
        fold = _parse_fold(raw.get("fold", ""), where, row_problems) if has_fold else None
        slice_id = normalize_slice_id(index) if index else ""
        if slice_id in first_line:
            row_problems.append(f"{where}: duplicate slice id {index!r} (first on line {first_line[slice_id]})")
        problems.extend(row_problems)
        if row_problems:
            continue
        first_line[slice_id] = line
        rows[slice_id] = MetaRow(tumor_type=tumor_type, pid=pid, fold=fold)
        if tumor_type is not None and pid is not None:
            patient_types[pid][tumor_type].append(line)

    for pid, lines_by_type in patient_types.items():
        if len(lines_by_type) > 1:
            listed = "; ".join(
                f"{tumor_type_name(code)} on line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}"
                for code, lines in lines_by_type.items()
            )
            problems.append(f"{path}: patient {pid!r} is listed with {len(lines_by_type)} tumour types: {listed}")
    if problems:
        raise DatasetError(problems)
    return MetaTable(path=path, rows=rows, has_tumor_type=has_tumor_type, has_pid=has_pid, has_fold=has_fold)


def _parse_tumor_type(raw: dict[str, str], where: str, problems: list[str]) -> int | None:
    text = raw.get("label", "")
    try:
        code = int(text)
        name = tumor_type_name(code)
    except ValueError:
        problems.append(f"{where}: label {text!r} is not a tumour type (expected one of {sorted(TUMOR_TYPES)})")
        return None
    given_name = raw.get("label_name", "")
    if given_name and given_name.lower() != name:
        problems.append(f"{where}: label_name {given_name!r} does not match label {code} ({name})")
    return code


def _parse_fold(text: str, where: str, problems: list[str]) -> int | None:
    try:
        fold = int(text)
    except ValueError:
        fold = 0
    if fold < 1:
        problems.append(f"{where}: fold {text!r} is not a positive whole number")
        return None
    return fold
