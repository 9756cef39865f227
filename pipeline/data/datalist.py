"""Build, write and summarise the decathlon-style ``datalist.json`` that the bundle's configs read.

``monai.data.load_decathlon_datalist(path, data_list_key="training", base_dir=dataset_dir)`` reads it: the lists
``training``, ``validation`` and ``test`` hold one entry per slice, with ``image`` and ``label`` paths relative
to the dataset folder, and ``pid``, ``tumor_type``, ``tumor_type_name`` and ``slice_id``.
"""

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text_atomic
from pipeline.data.errors import DatasetError
from pipeline.data.sources import UNKNOWN_TUMOR_TYPE, UNKNOWN_TUMOR_TYPE_NAME, SliceRecord
from pipeline.data.split import SET_NAMES
from pipeline.data.tumor_types import TUMOR_TYPES, tumor_type_name
from pipeline.inference.discovery import not_a_regular_file

DATALIST_NAME = "datalist.json"
LABELS = {"0": "background", "1": "tumour"}
DEFAULT_NAME = "brain_tumor_mri_2d"
DEFAULT_DESCRIPTION = "2D T1-weighted contrast-enhanced MRI slices with tumour masks"


def describe_tumor_type(code: int) -> str:
    """The name of a tumour-type code, ``"unknown"`` for ``UNKNOWN_TUMOR_TYPE``."""
    return UNKNOWN_TUMOR_TYPE_NAME if code == UNKNOWN_TUMOR_TYPE else tumor_type_name(code)


def datalist_entry(record: SliceRecord, dataset_dir: Path) -> dict[str, Any]:
    """One datalist entry; ``image``/``label`` relative to ``dataset_dir`` (``..`` where the source lies outside)."""
    return {
        "image": relative_path(record.image, dataset_dir),
        "label": relative_path(record.label, dataset_dir),
        "pid": record.pid,
        "tumor_type": record.tumor_type,
        "tumor_type_name": describe_tumor_type(record.tumor_type),
        "slice_id": record.slice_id,
    }


def build_datalist(
    sets: Mapping[str, Sequence[SliceRecord]],
    dataset_dir: Path,
    split: Mapping[str, Any],
    name: str = DEFAULT_NAME,
    description: str = DEFAULT_DESCRIPTION,
) -> dict[str, Any]:
    """Assemble the datalist: metadata, ``split`` (how the sets were made, completed with counts) and the sets."""
    lists = {set_name: [datalist_entry(record, dataset_dir) for record in sets[set_name]] for set_name in SET_NAMES}
    sizes = Counter("x".join(map(str, record.shape)) for records in sets.values() for record in records if record.shape)
    return {
        "name": name,
        "description": description,
        "labels": dict(LABELS),
        "tumor_types": {str(code): type_name for code, type_name in TUMOR_TYPES.items()},
        "split": {**split, "image_sizes": dict(sorted(sizes.items())), "counts": count_sets(lists)},
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **lists,
    }


def write_datalist(datalist: Mapping[str, Any], path: Path) -> None:
    """Write the datalist as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(datalist, indent=2) + "\n")


def read_datalist(path: Path, lists: Sequence[str] = ()) -> dict[str, Any]:
    """The datalist at ``path``; ``DatasetError`` in one line when it is no JSON object, or one of ``lists`` is
    missing or holds an entry without ``image`` and ``label`` paths, or one naming a device file, a named pipe, a
    socket or a folder (which a reader could block on or read forever)."""
    try:
        datalist = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise DatasetError([f"{path}: cannot be read as a datalist ({reason}); write it with `prepare`"]) from None
    if not isinstance(datalist, dict):
        raise DatasetError([f"{path}: not a datalist: expected a JSON object holding the lists {', '.join(SET_NAMES)}"])
    for name in lists:
        entries = datalist.get(name)
        if not isinstance(entries, list):
            raise DatasetError([f"{path}: no '{name}' list"])
        for number, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("image", "label")):
                raise DatasetError([f"{path}: entry {number} of the '{name}' list has no image and label paths"])
            for key in ("image", "label"):
                file = Path(path).parent / entry[key]  # relative paths are relative to the dataset folder
                if os.path.lexists(file) and (kind := not_a_regular_file(file)):
                    raise DatasetError([f"{file}: not a regular file ({kind}), named by {path}; it is not opened"])
    return datalist


def count_sets(lists: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Slices and patients per set, in total and per tumour-type name (every type of the dataset, zeros included)."""
    type_names = sorted(
        {entry["tumor_type_name"] for set_name in SET_NAMES for entry in lists.get(set_name, [])}, key=_type_order
    )
    counts = {}
    for set_name in SET_NAMES:
        entries = lists.get(set_name, [])
        counts[set_name] = {"slices": len(entries), "patients": len({entry["pid"] for entry in entries})}
        by_type = counts[set_name]["by_tumor_type"] = {}
        for type_name in type_names:
            group = [entry for entry in entries if entry["tumor_type_name"] == type_name]
            by_type[type_name] = {"slices": len(group), "patients": len({entry["pid"] for entry in group})}
    return counts


def format_summary(datalist: Mapping[str, Any]) -> str:
    """A table of slices and patients per set and tumour type, for printing."""
    counts = count_sets(datalist)
    rows = [("set", "tumour type", "slices", "patients")]
    for set_name in SET_NAMES:
        for type_name, numbers in counts[set_name]["by_tumor_type"].items():
            rows.append((set_name, type_name, str(numbers["slices"]), str(numbers["patients"])))
        rows.append((set_name, "all", str(counts[set_name]["slices"]), str(counts[set_name]["patients"])))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}" for row in rows
    )


def _type_order(type_name: str) -> int:
    codes = {name: code for code, name in TUMOR_TYPES.items()}
    return codes.get(type_name, UNKNOWN_TUMOR_TYPE)


def relative_path(path: Path, dataset_dir: Path) -> str:
    """``path`` relative to ``dataset_dir`` with forward slashes (``..`` where it lies outside), symlinks kept."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(dataset_dir))).as_posix()
