"""One predictor per run: the bundle's inference config read once, its components built once, for every input.

:class:`BundlePredictor` reads ``configs/inference.json`` (after ``configs/common.json``), then merges the
trained model's ``model_config.json`` and the run's overrides into the one MONAI ``ConfigWorkflow`` that
``monai.bundle run`` would build. From it come, once per run:

- the network (one model or the fold ensemble), its weights checked and loaded once;
- 2D slice files, segmented by the workflow's own evaluator, as ``monai.bundle run`` segments them;
- 3D volumes and DICOM series, segmented by a :class:`SliceSegmenter` holding the same network, inferer and
  transforms;
- the output names, asked of the resolved writers (``SaveImaged``'s folder layout, ``SaveOverlayd``), so what a
  run plans is what its writers write.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.data import MetaTensor
from monai.handlers import StatsHandler
from monai.transforms import Compose, SaveImaged
from monai.utils import ImageMetaKey

from pipeline.bundle_configs import STANDALONE_INFERENCE, bundle_config_files
from pipeline.checkpoints.listed_weights import check_listed_weights
from pipeline.checkpoints.model_config import MODEL_CONFIG_FILE, check_overrides_agree, read_model_config
from pipeline.checkpoints.safe_loading import verify_checkpoint
from pipeline.checkpoints.weights_identity import describe_weights
from pipeline.inference.slice_segmenter import SliceSegmenter
from pipeline.overrides import check_overrides
from pipeline.transforms.overlay import SaveOverlayd


class BundlePredictor:
    """The inference workflow of ``bundle_dir`` with ``overrides`` (config keys, as ``python -m pipeline infer``
    takes them) and the trained model's definition merged; nothing is built until :meth:`build`.

    Raises ``UserError`` for an override that fits no key of the configs and for one that contradicts the
    trained model.
    """

    def __init__(self, bundle_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> None:
        bundle_dir = Path(bundle_dir).resolve()
        configs = bundle_dir / "configs"
        self.bundle_dir = bundle_dir
        self.overrides = {"bundle_root": str(bundle_dir), **(overrides or {})}
        self.workflow = ConfigWorkflow(
            config_file=[str(path) for path in bundle_config_files(bundle_dir, [STANDALONE_INFERENCE])],
            meta_file=str(configs / "metadata.json"),
            logging_file=str(configs / "logging.conf"),
            workflow_type="infer",
        )
        parser = self.workflow.parser
        check_overrides(parser.get(), self.overrides)
        parser.update(self.overrides)
        ckpt_dir = Path(parser.get_parsed_content("ckpt_dir"))
        self.weights_path = Path(parser.get_parsed_content("checkpoint_loader#load_path"))
        model_config = read_model_config(ckpt_dir)
        if model_config is not None:
            check_overrides_agree(model_config, self.overrides, ckpt_dir / MODEL_CONFIG_FILE)
            parser.update({**model_config, **self.overrides})
        self.slice_segmenter: SliceSegmenter | None = None
        self.weights: dict[str, Any] = {}

    def value(self, key: str) -> Any:
        """The resolved config value of ``key`` (``threshold``, ``device``, ``mask_writers``...)."""
        return self.workflow.parser.get_parsed_content(key)

    def build(self, slice_files: Sequence[Path] = ()) -> BundlePredictor:
        """Initialise the workflow for ``slice_files`` (the 2D files :meth:`segment_slice_files` segments), build
        the network and load its weights, checked, into it; return ``self``.

        Raises ``MissingCheckpointError``, ``TorchScriptCheckpointError``, ``UnsafeCheckpointError``,
        ``DamagedCheckpointError`` or ``CheckpointMismatchError`` (one line each, naming the file) before anything is
        segmented. Weights whose hash differs from the one the bundle's ``large_files.yml`` lists for them are
        named in a warning, or refused with ``ListedWeightsError`` under ``strict_weights``.
        """
        self.workflow.parser["datalist"] = [{"image": str(path)} for path in slice_files]
        self.workflow.initialize()
        network = self.value("network")
        state = verify_checkpoint(self.weights_path, network)
        network.load_state_dict(state)
        self.weights = describe_weights(self.weights_path, self.value("folds"), state)
        check_listed_weights(self.bundle_dir, self.weights_path, self.weights["sha256"], self.value("strict_weights"))
        meta = self.workflow.parser.get("_meta_", {})
        self.slice_segmenter = SliceSegmenter(
            network=network,
            inferer=self.value("inferer"),
            slice_transforms=Compose(self.value("slice_transforms")),
            probability_transforms=Compose(self.value("probability_transforms")),
            mask_transforms=Compose(self.value("mask_transforms")),
            device=self.value("device"),
            amp_dtype=self.value("amp_dtype") if self.value("amp") else None,
            batch_size=self.value("slice_batch_size"),
            name=str(meta.get("name", "")),
            version=str(meta.get("version", "")),
        )
        return self

    def segment_slice_files(self, on_each: Callable[[list[str]], object] | None = None) -> None:
        """Segment the slice files given to :meth:`build` with the workflow's evaluator and write their outputs,
        calling ``on_each`` with the files of each batch once their outputs are written.

        Raises ``InputFailuresError`` listing the files that could not be read, after the others are written.
        """
        # The weights are in the network already, checked; the config's loader is there for monai.bundle run.
        evaluator, loader = self.value("evaluator"), self.value("checkpoint_loader")
        if evaluator.has_event_handler(loader, Events.STARTED):
            evaluator.remove_event_handler(loader, Events.STARTED)
        # A fault that stops the run reaches the command, which reports it in one line: no traceback logged first.
        for handler in self.value("handlers"):
            if isinstance(handler, StatsHandler) and evaluator.has_event_handler(
                handler.exception_raised, Events.EXCEPTION_RAISED
            ):
                evaluator.remove_event_handler(handler.exception_raised, Events.EXCEPTION_RAISED)
                # ignite swallows an exception when EXCEPTION_RAISED keeps an empty list of handlers.
                evaluator.add_event_handler(Events.EXCEPTION_RAISED, _reraise)
        evaluator.logger.setLevel(logging.CRITICAL)
        if on_each is not None:
            report = evaluator.add_event_handler(
                Events.ITERATION_COMPLETED, lambda engine: on_each(batch_files(engine))
            )
        try:
            self.workflow.run()
        finally:
            if on_each is not None:
                report.remove()
        self.workflow.finalize()

    def slice_outputs(self, source: Path) -> list[str]:
        """The files the configured writers write for the 2D slice ``source``: mask, overlay, probability."""
        writers = list(self.value("mask_writers"))
        if self.value("save_probabilities"):
            writers += self.value("probability_writers")
        return [str(path) for writer in writers if (path := written_path(writer, source)) is not None]

    def volume_output(self, source: Path) -> str:
        """The NIfTI mask of the 3D volume ``source``: named as its slice mask would be, always ``.nii.gz``."""
        mask_writer = next(writer for writer in self.value("mask_writers") if isinstance(writer, SaveImaged))
        return str(written_path(mask_writer, source, extension=".nii.gz"))


def _reraise(engine: Engine, error: BaseException) -> None:
    raise error


def written_path(writer: Any, source: Path, extension: str | None = None) -> Path | None:
    """Where the writer transform ``writer`` saves its output for the input ``source`` (with ``extension`` in
    place of its own, when given), or None for a transform that writes nothing."""
    if isinstance(writer, SaveImaged):
        layout = copy.copy(writer.saver.folder_layout)
        layout.makedirs = False
        if extension is not None:
            layout.ext = extension
        return Path(layout.filename(subject=str(source)))
    if isinstance(writer, SaveOverlayd):
        return writer.output_path(source)
    return None


def batch_files(engine: Engine) -> list[str]:
    """The input files of the batch ``engine`` just finished (its decollated items' ``image`` metadata)."""
    items = engine.state.batch if isinstance(engine.state.batch, list) else []
    images = [item.get("image") for item in items if isinstance(item, dict)]
    return [str(image.meta[ImageMetaKey.FILENAME_OR_OBJ]) for image in images if isinstance(image, MetaTensor)]
