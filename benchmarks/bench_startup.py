"""Start-up of a one-slice ``python -m pipeline infer`` against a bare loop doing the same work, as whole processes.

    python benchmarks/bench_startup.py [--repeats 5] [--folds 1]

Both sides segment one phantom figshare ``.mat`` slice of 512 px with the shipped model (every fold model of the
ensemble, or those of ``--folds``) on the CPU, flip TTA on, and write a NIfTI mask. The bundle side is the
command (no overlays); the bare side is this script run with ``--bare``: it imports torch and MONAI, builds the
fold models from ``models/model_config.json``, loads their weights from ``models/model.pt``, then reads, resizes,
scales, runs each model on the slice and its mirror image, averages the probabilities, resizes them back,
thresholds, keeps the largest component, fills holes and writes the mask. Runs alternate, each in a fresh
process, so load from other processes hits both alike; the median wall-clock and CPU seconds of each are kept.
A third process that only imports torch and MONAI gives the floor both stand on. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def bare_segment(source: Path, output: Path, folds: list[int] | None) -> None:
    """Segment ``source`` into ``output/<name>_seg.nii.gz`` with plain torch/scipy/nibabel code and the shipped
    fold models (all, or ``folds``)."""
    import h5py
    import monai  # noqa: F401  (both sides pay for MONAI's import)
    import nibabel as nib
    import numpy as np
    import torch
    from scipy import ndimage

    from pipeline import default_bundle_dir
    from pipeline.networks import UNet2D

    models = default_bundle_dir() / "models"
    definition = json.loads((models / "model_config.json").read_text())
    member = {key: value for key, value in definition["network_def"]["member"].items() if key != "_target_"}
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    networks = []
    for index, fold in enumerate(definition["network_def"]["folds"]):
        if folds is None or fold in folds:
            network = UNet2D(**member)
            prefix = f"members.{index}."
            network.load_state_dict(
                {key[len(prefix) :]: value for key, value in state.items() if key[: len(prefix)] == prefix}
            )
            networks.append(network.eval())
    size = int(definition["image_size"])
    low_pct, high_pct = (value / 100 for value in definition["intensity_percentiles"])

    with h5py.File(source, "r") as mat:
        image = torch.as_tensor(np.asarray(mat["cjdata"]["image"]).T, dtype=torch.float32)
    resized = torch.nn.functional.interpolate(image[None, None], size=(size, size), mode="area")
    low, high = torch.quantile(resized.flatten(), torch.tensor([low_pct, high_pct]))
    scaled = ((resized - low) / (high - low).clamp_min(1e-8)).clamp(0, 1)
    with torch.inference_mode():
        probability = sum(
            torch.softmax(network(scaled), 1) + torch.flip(torch.softmax(network(torch.flip(scaled, (2,))), 1), (2,))
            for network in networks
        ) / (2 * len(networks))
    tumour = torch.nn.functional.interpolate(probability[:, 1:], size=tuple(image.shape), mode="area")[0, 0]
    mask = tumour.numpy() > 0.5
    connectivity = ndimage.generate_binary_structure(2, 2)
    labels, count = ndimage.label(mask, structure=connectivity)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, range(1, count + 1))))
    mask = ndimage.binary_fill_holes(mask, structure=connectivity).astype(np.uint8)
    output.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask, np.eye(4)), output / f"{source.stem}_seg.nii.gz")


def timed(command: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, the process and its children) of ``command`` run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=REPOSITORY, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each side, alternating (default: 5)")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="fold models to run (default: all)")
    parser.add_argument("--bare", nargs=2, type=Path, metavar=("SLICE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_segment(*args.bare, args.folds)
        return

    from phantom_slices import phantom_datalist
    from run_environment import run_environment

    folds = ["--folds", *map(str, args.folds)] if args.folds else []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = Path(phantom_datalist(work / "phantoms", 1)[0]["image"])
        (work / "in").mkdir()
        slice_file = source.rename(work / "in" / source.name)
        sides = {
            "infer": [sys.executable, "-m", "pipeline", "infer", "--input", str(slice_file), "--device", "cpu"]
            + ["--no-overlays", "--quiet", *folds, "--output"],
            "bare": [sys.executable, str(Path(__file__).resolve()), *folds, "--bare", str(slice_file)],
            "imports_only": [sys.executable, "-c", "import torch, monai"],
        }
        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        for repeat in range(args.repeats + 1):  # the first round warms the file cache and is not kept
            for side, command in sides.items():
                output = [str(work / f"out_{side}_{repeat}")] if side != "imports_only" else []
                seconds = timed(command + output)
                if repeat:
                    runs[side].append(seconds)

    wall = {side: statistics.median(run[0] for run in side_runs) for side, side_runs in runs.items()}
    cpu = {side: statistics.median(run[1] for run in side_runs) for side, side_runs in runs.items()}
    result = {
        "benchmark": "bench_startup",
        "folds": args.folds or "all",
        "repeats": args.repeats,
        **{f"{side}_wall_s": round(value, 2) for side, value in wall.items()},
        **{f"{side}_cpu_s": round(value, 2) for side, value in cpu.items()},
        "infer_minus_bare_wall_s": round(wall["infer"] - wall["bare"], 2),
        "infer_minus_bare_cpu_s": round(cpu["infer"] - cpu["bare"], 2),
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
