"""MONAI's ``MetricsSaver`` with each report file written atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ignite.engine import Engine
from monai.handlers import MetricsSaver


class AtomicMetricsSaver(MetricsSaver):
    """``MetricsSaver`` that writes its reports into a temporary folder inside ``save_dir``, then renames each
    finished file into ``save_dir``: a reader never sees a half-written table, a crash leaves the old ones.

    Arguments are those of ``MetricsSaver``.
    """

    def __call__(self, engine: Engine) -> None:
        final_dir = Path(self.save_dir)
        final_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".metrics-", dir=final_dir))
        try:
            self.save_dir = str(staging)
            super().__call__(engine)
            for written in sorted(staging.iterdir()):
                with open(written, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(written, final_dir / written.name)
        finally:
            self.save_dir = str(final_dir)
            shutil.rmtree(staging, ignore_errors=True)
