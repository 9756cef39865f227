"""Keep a batch run going past inputs that cannot be loaded: each becomes a one-line failure record.

``FailureTolerantDataset`` catches the error of an item's transforms and hands back a record holding one line
that names the file and the fault; ``collate_without_failures`` collates the good items of a batch and lists
the failures under ``LOAD_FAILURES``; ``pipeline.engines.FailureTolerantEvaluator`` skips them and keeps them
for the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from monai.data import Dataset, list_data_collate

LOAD_FAILURES = "load_failures"


class FailureTolerantDataset(Dataset):
    """MONAI ``Dataset`` that returns ``{LOAD_FAILURES: [line]}`` for an item whose transforms raise.

    ``KeyboardInterrupt`` and other non-``Exception`` errors still stop the run.

    Args:
        data: the items, dicts holding ``source_key``.
        transform: the transforms applied to each item.
        source_key: the key naming the item's input file in failure lines.
    """

    def __init__(self, data: Sequence, transform: Callable | None = None, source_key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.source_key = source_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as error:
            item = self.data[index]
            source = item.get(self.source_key, f"item {index}") if isinstance(item, dict) else f"item {index}"
            return {LOAD_FAILURES: [failure_line(source, error)]}


def failure_line(source: Any, error: BaseException) -> str:
    """One line naming ``source`` and the original fault behind ``error`` (MONAI wraps transform errors)."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip()
    first = text.splitlines()[0] if text else type(root).__name__
    return first if first.startswith(str(source)) else f"{source}: {first}"


def collate_without_failures(items: Sequence[dict]) -> dict:
    """Collate the loaded items with MONAI's ``list_data_collate`` and list the failures under ``LOAD_FAILURES``.

    A batch of failures only is ``{LOAD_FAILURES: [...]}``.
    """
    loaded = [item for item in items if LOAD_FAILURES not in item]
    failures = [line for item in items for line in item.get(LOAD_FAILURES, [])]
    batch = list_data_collate(loaded) if loaded else {}
    batch[LOAD_FAILURES] = failures
    return batch
