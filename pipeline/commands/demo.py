"""``python -m pipeline demo``: phantoms -> prepare -> train -> evaluate -> infer, offline, in minutes on a CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.commands.evaluate import format_summary
from pipeline.overrides import add_bundle_arguments, device_override, parse_overrides, quiet_override

# A small U-Net at 128 px: enough to segment the phantoms well within minutes on two CPU cores.
DEMO_SETTINGS = {
    "image_size": 128,
    "network_def#features": [8, 16, 32, 64, 128],
    "epochs": 30,
    "warmup_epochs": 1,
    "batch_size": 8,
    "learning_rate": 0.003,
    "num_workers": 0,
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``demo`` command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on phantom data (no download, no GPU needed)",
        description="Write phantom slices in the figshare .mat format, prepare a patient-wise split, train a "
        "small U-Net at 128 px, evaluate it per tumour type and segment the test slices.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=30, help="phantom patients (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=5, help="slices per patient (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="phantom slice size in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and training (default: %(default)s)")
    parser.add_argument(
        "--verbose", action="store_true", help="log the training loss of every iteration, not only one line per epoch"
    )
    add_bundle_arguments(parser, example="--epochs 5")
    parser.set_defaults(accepts_overrides=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run every stage of the pipeline into ``args.out`` and print the test Dice per tumour type."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.phantoms.slices import synthesize_dataset
    from pipeline.workflow import check_bundle_overrides, run_bundle

    out = args.out.resolve()
    raw, dataset = out / "phantoms", out / "dataset"
    settings = {
        **DEMO_SETTINGS,
        "iteration_log": args.verbose,
        "seed": args.seed,
        "dataset_dir": str(dataset),
        "ckpt_dir": str(out / "models"),
        **device_override(args.device),
        **quiet_override(args.quiet),
        **parse_overrides(args.overrides),
    }
    # A rerun redoes the demo's own training in its own folder; weights anywhere else stay guarded as ever.
    settings.setdefault("overwrite", settings["ckpt_dir"] == str(out / "models"))
    check_bundle_overrides(args.bundle, ["train.json", "evaluate.json"], settings)
    if not any(raw.glob("*.mat")):
        print(f"[1/5] writing phantom slices to {raw}")
        synthesize_dataset(raw, patients=args.patients, slices_per_patient=args.slices, size=args.size, seed=args.seed)
    print(f"[2/5] preparing a patient-wise split in {dataset}")
    datalist = prepare_dataset(raw, dataset, seed=args.seed)
    print("[3/5] training")
    run_bundle(args.bundle, ["train.json"], "train", output_dir=str(out / "training"), **settings)
    print("[4/5] evaluating on the test patients")
    run_bundle(args.bundle, ["train.json", "evaluate.json"], "eval", output_dir=str(out / "evaluation"), **settings)
    print("[5/5] segmenting the test slices")
    run_bundle(
        args.bundle,
        ["inference.json"],
        "infer",
        datalist=[{"image": str((dataset / entry["image"]).resolve())} for entry in datalist["test"]],
        output_dir=str(out / "predictions"),
        **{key: settings[key] for key in ("ckpt_dir", "num_workers")},
        **device_override(args.device),
    )
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    print("\ntest Dice per tumour type (phantom data):")
    print(format_summary(summary))
    print(f"\nlearning curve: {out / 'training' / 'learning_curve.png'}")
    print(f"evaluation report and figures: {out / 'evaluation'}")
    print(f"predicted masks and overlays: {out / 'predictions'}")
    return 0
