"""Slices/s of the bundle's inference end to end against a bare loop doing the same work.

The bundle side is ``infer``'s predictor (:class:`~pipeline.inference.predictor.BundlePredictor`, which runs
``configs/inference.json`` through MONAI's ``ConfigWorkflow``) on phantom ``.mat`` slices made on the fly:
read, resize, normalise, infer with flip TTA, softmax, invert the resize, threshold, keep the largest
component, fill holes and write one ``<name>_seg.nii.gz`` per slice (overlays off). The bare
side is a plain torch/scipy/nibabel loop doing the same work (:func:`time_bare`), each part timed. The
network has random weights (speed does not depend on them). Runs alternate and the fastest of each is kept,
so that load from other processes hits both alike. Start-up is timed too: the predictor from its configs to
ready, against building the network and loading its weights by hand.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from phantom_slices import phantom_datalist
from run_environment import run_environment
from scipy import ndimage

from pipeline import default_bundle_dir
from pipeline.data.figshare import FigshareMatReader
from pipeline.inference.predictor import BundlePredictor
from pipeline.networks import UNet2D

# One U-Net as the bundle trains it (the shipped model may be a fold ensemble of them).
# MONAI's KeepLargestConnectedComponent and FillHoles count diagonal neighbours as connected: so does the bare loop.
FULL_CONNECTIVITY = ndimage.generate_binary_structure(2, 2)
SINGLE_NETWORK = {"_target_": "pipeline.networks.UNet2D", "in_channels": 1, "out_channels": 2, "norm": "batch"}


def bundle_predictor(args: argparse.Namespace, work: Path) -> BundlePredictor:
    """``infer``'s predictor (``inference.json``) writing masks only, its network one U-Net with random weights
    saved to ``work/models/model.pt``; not built yet."""
    overrides = {
        "ckpt_dir": str(work / "models"),
        "output_dir": str(work / "predictions"),
        "image_size": args.size,
        "save_overlays": False,
        "num_workers": args.workers,
        "network_def": {**SINGLE_NETWORK, "features": args.features},
        **({} if args.device is None else {"device": f"$torch.device({args.device!r})"}),
    }
    predictor = BundlePredictor(default_bundle_dir(), overrides)
    (work / "models").mkdir(exist_ok=True)
    torch.save(predictor.value("network_def").state_dict(), work / "models" / "model.pt")
    return predictor


def time_startup(args: argparse.Namespace, files: list[Path], work: Path) -> tuple[BundlePredictor, float, float]:
    """The built predictor, the seconds from nothing to a predictor ready to segment ``files`` (configs read,
    network built, weights checked and loaded), and the seconds a bare loop takes to get ready (network built,
    weights loaded). Imports are done before either clock starts."""
    bundle_predictor(args, work)  # writes the weights both sides load
    start = time.perf_counter()
    predictor = bundle_predictor(args, work).build(files)
    bundle = time.perf_counter() - start
    start = time.perf_counter()
    network = UNet2D(
        **{key: value for key, value in SINGLE_NETWORK.items() if key != "_target_"}, features=args.features
    )
    network.load_state_dict(torch.load(work / "models" / "model.pt", map_location="cpu", weights_only=True))
    network.to(predictor.value("device")).eval()
    return predictor, bundle, time.perf_counter() - start


def time_bundle(predictor: BundlePredictor) -> float:
    """Seconds for one run of ``infer``'s predictor over its slice files."""
    start = time.perf_counter()
    predictor.segment_slice_files()
    return time.perf_counter() - start


def time_bare(predictor: BundlePredictor, files: list[Path], out: Path) -> dict[str, float]:
    """Seconds of a bare torch/scipy/nibabel loop doing the same work as the bundle, part by part: read each
    file, resize it (area) and scale it to its 0.5-99.5th percentiles, run the network with flip TTA (mean
    softmax), bring the tumour probability back to the slice's size, threshold it, keep the largest component,
    fill its holes and write the mask with nibabel."""
    device, amp = predictor.value("device"), predictor.value("amp")
    network = predictor.value("network").eval()
    size = int(predictor.value("image_size"))
    reader = FigshareMatReader(field="image")
    parts = dict.fromkeys(("read", "preprocess", "forward", "postprocess", "write"), 0.0)
    out.mkdir(exist_ok=True)
    for path in files:
        start = time.perf_counter()
        image = torch.as_tensor(reader.get_data(reader.read(str(path)))[0], dtype=torch.float32)
        parts["read"] += time.perf_counter() - start

        start = time.perf_counter()
        resized = torch.nn.functional.interpolate(image[None, None], size=(size, size), mode="area")
        low, high = torch.quantile(resized.flatten(), torch.tensor([0.005, 0.995]))
        scaled = ((resized - low) / (high - low).clamp_min(1e-8)).clamp(0, 1).to(device)
        parts["preprocess"] += time.perf_counter() - start

        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            flipped = torch.flip(network(torch.flip(scaled, (2,))), (2,))
            probability = (torch.softmax(network(scaled).float(), 1) + torch.softmax(flipped.float(), 1)) / 2
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        parts["forward"] += time.perf_counter() - start

        start = time.perf_counter()
        tumour = torch.nn.functional.interpolate(probability[:, 1:].cpu(), size=tuple(image.shape), mode="area")
        mask = tumour[0, 0].numpy() > 0.5
        labels, count = ndimage.label(mask, structure=FULL_CONNECTIVITY)
        if count > 1:
            mask = labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, range(1, count + 1))))
        mask = ndimage.binary_fill_holes(mask, structure=FULL_CONNECTIVITY).astype(np.uint8)
        parts["postprocess"] += time.perf_counter() - start

        start = time.perf_counter()
        nib.save(nib.Nifti1Image(mask, np.eye(4)), out / f"{path.stem}_seg.nii.gz")
        parts["write"] += time.perf_counter() - start
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image_size the network sees")
    parser.add_argument("--source-size", type=int, default=512, help="phantom slice size on disk (figshare: 512)")
    parser.add_argument("--features", type=lambda s: [int(f) for f in s.split(",")], default=[16, 32, 64, 128, 256])
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="the bundle's DataLoader workers")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--device", default=None, help="default: the config's choice (CUDA if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = [Path(entry["image"]) for entry in phantom_datalist(work / "inputs", args.slices, args.source_size)]
        for extra in (work / "inputs").glob("*.mat"):
            if extra not in files:
                extra.unlink()  # the phantom writer's fold table and slices beyond --slices are not inputs
        predictor, bundle_startup, bare_startup = time_startup(args, files, work)
        bundle, bare = [], []
        for _ in range(args.repeats):
            bare.append(time_bare(predictor, files, work / "bare"))
            bundle.append(time_bundle(predictor))
        written = len(list((work / "predictions").glob("*_seg.nii.gz")))
        differing = sum(
            int(
                np.count_nonzero(
                    nib.load(bare_mask).get_fdata() != nib.load(work / "predictions" / bare_mask.name).get_fdata()
                )
            )
            for bare_mask in (work / "bare").glob("*_seg.nii.gz")
        )
        device = predictor.value("device")

    best_bare = min(bare, key=lambda parts: sum(parts.values()))
    result = {
        "benchmark": "bench_inference",
        "device": str(device),
        "image_size": args.size,
        "source_size": args.source_size,
        "features": args.features,
        "slices": args.slices,
        "masks_written": written,
        "pixels_differing_from_bare": differing,
        "bundle_slices_per_s": round(args.slices / min(bundle), 2),
        "bare_slices_per_s": round(args.slices / sum(best_bare.values()), 2),
        "bare_seconds": {part: round(seconds, 3) for part, seconds in best_bare.items()},
        "bundle_over_bare": round(sum(best_bare.values()) / min(bundle), 3),
        "bundle_startup_s": round(bundle_startup, 3),
        "bare_startup_s": round(bare_startup, 3),
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
