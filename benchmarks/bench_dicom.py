"""Seconds to segment one DICOM series into a DICOM SEG against the same slices as PNG in and PNG out.

A phantom MR series (``synth --format dicom``: 24 slices of 512x512 by default) is written once, and its slices
are also written as 8-bit PNGs (min-max scaled per slice, as the popular figshare conversion is). Both folders
then go through the command a user runs, ``python -m pipeline infer`` with the shipped model, overlays off, in
fresh processes: the DICOM folder gives one SEG (``<series>_seg.dcm``), the PNG folder one ``*_seg.png`` per
slice. Runs alternate and the fastest of each side is kept, so that load from other processes hits both alike;
the ratio DICOM / PNG is the figure (target: at most 1.5).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from run_environment import run_environment

from pipeline.dicom.series import read_dicom_folder
from pipeline.phantoms.dicom_series import write_phantom_series


def write_pngs(series_dir: Path, out: Path) -> int:
    """The slices of the one series in ``series_dir`` as 8-bit PNGs in ``out``; returns how many."""
    series, failures = read_dicom_folder(series_dir)
    if failures or len(series) != 1:
        raise SystemExit(f"bench_dicom: expected one readable series in {series_dir}, got {failures}")
    out.mkdir(parents=True)
    for number, pixels in enumerate(series[0].pixels, start=1):
        low, high = float(pixels.min()), float(pixels.max())
        scaled = np.round((pixels - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
        Image.fromarray(scaled).save(out / f"{number}.png")
    return len(series[0].pixels)


def time_infer(inputs: Path, output: Path, threads: int | None, *extra: str) -> float:
    """Wall-clock seconds of ``python -m pipeline infer`` on ``inputs`` in a fresh process."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    command = [sys.executable, "-m", "pipeline", "infer", "--input", str(inputs), "--output", str(output)]
    command += ["--no-overlays", "--device", "cpu", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--size", type=int, default=512, help="slice width and height on disk")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: unset)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_phantom_series(work / "dicom", patients=1, slices=args.slices, size=args.size, seed=0)
        slices = write_pngs(work / "dicom", work / "png")
        dicom, png = [], []
        for repeat in range(args.repeats):
            dicom.append(time_infer(work / "dicom", work / f"seg{repeat}", args.threads, "--recursive"))
            png.append(time_infer(work / "png", work / f"png{repeat}", args.threads, "--format", "png"))
        segs = len(list((work / "seg0").rglob("*.dcm")))
        masks = len(list((work / "png0").rglob("*_seg.png")))

    result = {
        "benchmark": "bench_dicom",
        "slices": slices,
        "size": args.size,
        "seg_files": segs,
        "png_masks": masks,
        "dicom_to_seg_s": round(min(dicom), 2),
        "png_to_png_s": round(min(png), 2),
        "ratio_dicom_over_png": round(min(dicom) / min(png), 3),
        "runs_s": {"dicom": [round(t, 2) for t in dicom], "png": [round(t, 2) for t in png]},
        **run_environment(),
        "infer_threads": args.threads or "torch default",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
