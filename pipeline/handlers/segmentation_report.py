"""An ignite handler that turns an evaluation run into per-type and per-patient reports with pictures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from pipeline.reports.evaluation import SliceResult, write_evaluation_report


class SegmentationReportHandler:
    """Collect who each evaluated slice belongs to, join it with the per-slice metrics, and write the report.

    The evaluator's metric handlers must keep per-slice values (``save_details=True``, MONAI's default);
    this handler reads them from ``engine.state.metric_details`` when the run completes and writes
    ``per_slice.csv``, ``per_tumor_type.csv``, ``per_patient.csv``, ``summary.json``, a Dice box plot per
    tumour type and overlays of the best, median and worst slices into ``output_dir``.

    Args:
        output_dir: folder of the report.
        dice_metric: name of the Dice metric in the evaluator (e.g. ``"val_mean_dice"``).
        hd95_metric: name of the HD95 metric in the evaluator.
        overlay_size: longest side, in pixels, of the thumbnails kept for the overlay figure.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        dice_metric: str = "val_mean_dice",
        hd95_metric: str = "val_hd95",
        overlay_size: int = 256,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.dice_metric = dice_metric
        self.hd95_metric = hd95_metric
        self.overlay_size = overlay_size
        self.identities: list[dict[str, str]] = []
        self.thumbnails: dict[str, dict[str, np.ndarray]] = {}
        self.summary: dict[str, object] | None = None

    def attach(self, engine: Engine) -> None:
        """Register the handler's callbacks on ``engine``."""
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _started(self, engine: Engine) -> None:
        self.identities, self.thumbnails = [], {}

    def _collect(self, engine: Engine) -> None:
        for item, output in zip(engine.state.batch, engine.state.output):
            filename = str(item["image"].meta.get("filename_or_obj", f"slice_{len(self.identities)}"))
            slice_id = str(item.get("slice_id", Path(filename).name.split(".")[0]))
            self.identities.append(
                {
                    "slice_id": slice_id,
                    "filename": filename,
                    "pid": str(item.get("pid", slice_id)),
                    "tumor_type_name": str(item.get("tumor_type_name", "unknown")),
                }
            )
            self.thumbnails[slice_id] = self._thumbnail(output)

    def _thumbnail(self, output: dict) -> dict[str, np.ndarray]:
        pred = output["pred"][1].detach().cpu() > 0.5
        label = output["label"][1].detach().cpu() > 0.5
        image = output["image"][0].detach().float().cpu()
        if image.shape != pred.shape:  # the image is at model resolution, the masks at the input's
            image = torch.nn.functional.interpolate(image[None, None], size=tuple(pred.shape), mode="bilinear")[0, 0]
        step = max(1, max(pred.shape) // self.overlay_size)
        low, high = float(image.min()), float(image.max())
        image_u8 = ((image - low) / max(high - low, 1e-6) * 255).to(torch.uint8)
        # MONAI arrays are indexed (x, y); transposing gives rows top to bottom as the slice is displayed.
        return {
            "image": image_u8[::step, ::step].numpy().T,
            "label": label[::step, ::step].numpy().T,
            "pred": pred[::step, ::step].numpy().T,
        }

    def _write(self, engine: Engine) -> None:
        details = engine.state.metric_details
        for name in (self.dice_metric, self.hd95_metric):
            if name not in details:
                raise KeyError(f"metric '{name}' has no per-slice values; known: {sorted(details)}")
        dice = _per_slice(details[self.dice_metric])
        hd95 = _per_slice(details[self.hd95_metric])
        if not len(dice) == len(hd95) == len(self.identities):
            raise RuntimeError(
                f"{len(self.identities)} slices seen but {len(dice)} Dice and {len(hd95)} HD95 values recorded"
            )
        results = [
            SliceResult(dice=float(d), hd95=float(h), **identity) for identity, d, h in zip(self.identities, dice, hd95)
        ]
        self.summary = write_evaluation_report(results, self.thumbnails, self.output_dir)


def _per_slice(values: torch.Tensor) -> np.ndarray:
    """Reduce an (N, C) per-slice metric to (N,) by averaging the foreground classes."""
    array = torch.as_tensor(values).detach().cpu().float().numpy()
    return array.reshape(array.shape[0], -1).mean(axis=1)
