"""``python -m pipeline serve``: the DICOM node. Series pushed in (C-STORE), segmented, SEG sent back."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

# Exit status of --status when the node is not running (as `systemctl status` gives for a stopped unit).
NOT_RUNNING = 3


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the DICOM node: receive pushed MR series (C-STORE), segment them, send each DICOM SEG back",
        description="Run a DICOM Storage SCP with the model loaded once. Each received instance is written to the "
        "spool before its C-STORE is answered; a series is segmented when its association ends or after a quiet "
        "period, and its SEG is sent back to the caller or a fixed destination, retried until stored. The journal "
        "in WORK_DIR/journal.sqlite records every series and refused instance; after a crash a restart finishes "
        "every pending series. SIGTERM stops the node cleanly. All settings come from the config file "
        "(docs/deployment.md).",
    )
    parser.add_argument("--config", type=Path, required=True, help="the node's JSON or YAML config file")
    parser.add_argument(
        "--status",
        action="store_true",
        help=f"print whether the node runs, its queue and its last failures, and exit (status {NOT_RUNNING} when "
        "it is not running)",
    )
    parser.set_defaults(must_exist=("config",))
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; or, with ``--status``, report on the node."""
    from pipeline.node.config import load_node_config

    config = load_node_config(args.config)
    if args.status:
        from pipeline.node.status import status_report

        running, lines = status_report(config)
        print(*lines, sep="\n")
        return 0 if running else NOT_RUNNING
    return _serve(config)


def _serve(config) -> int:
    from pipeline import default_bundle_dir
    from pipeline.inference.predictor import BundlePredictor
    from pipeline.node.service import DicomNode
    from pipeline.outputs.lock import output_folder_lock
    from pipeline.preflight import INFER_MIN_FREE_BYTES, check_output_folder

    predictor = BundlePredictor(config.bundle or default_bundle_dir(), config.model_overrides)
    with output_folder_lock(config.work_dir):
        check_output_folder(config.work_dir, INFER_MIN_FREE_BYTES)
        log = _node_logger()
        log.info("loading the model of %s", config.bundle or default_bundle_dir())
        node = DicomNode(config, predictor.build().slice_segmenter)
        stop = threading.Event()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda *_: stop.set())
        node.start()
        try:
            while not stop.wait(1.0):
                pass
        finally:
            log.info("stopping: the series in progress is finished, the others stay in the journal")
            node.stop()
        log.info("stopped")
    return 0


def _node_logger() -> logging.Logger:
    """The node's log, one line per event on stderr with its time; the DICOM libraries' own lines only from
    warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log = logging.getLogger("pipeline.node")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    for name in ("pynetdicom", "dicomweb_client", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return log
