"""Reading speed of figshare ``.mat`` slices and of their PNG conversion through MONAI's ``LoadImaged``.

    python benchmarks/bench_readers.py [--slices 64] [--size 512] [--repeats 3]

Writes phantom slices in both forms to a temporary folder, then loads every image + mask pair
(one "slice") with: the figshare reader on ``.mat``; MONAI's default readers on PNG; and the
figshare-reader transforms on PNG, which reach ``PILReader`` by fallback. Each rate is the best of
``--repeats`` passes, to damp the noise of a shared machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import monai
import numpy as np
from monai.transforms import Compose, LoadImaged
from PIL import Image

from pipeline.data.figshare import FigshareMatReader, write_figshare_slice
from pipeline.phantoms.slices import make_phantom_slice


def write_both_forms(folder: Path, count: int, size: int) -> tuple[list[dict], list[dict]]:
    """Write ``count`` phantom slices as ``N.mat`` and as the popular PNG conversion; return both item lists."""
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    mat_items, png_items = [], []
    for index in range(1, count + 1):
        tumor_type = index % 3 + 1
        image, mask = make_phantom_slice(rng, tumor_type, size)
        mat = folder / f"{index}.mat"
        write_figshare_slice(mat, image, mask, tumor_type, pid=str(100000 + index // 4))
        # The PNG conversion: per-slice min-max scaling to 8 bits, mask 0/255.
        low, high = float(image.min()), float(image.max())
        scaled = np.round((image - low) / max(high - low, 1.0) * 255).astype(np.uint8)
        Image.fromarray(scaled).save(folder / "images" / f"{index}.png")
        Image.fromarray(mask * 255).save(folder / "masks" / f"{index}.png")
        mat_items.append({"image": str(mat), "label": str(mat)})
        png_items.append(
            {"image": str(folder / "images" / f"{index}.png"), "label": str(folder / "masks" / f"{index}.png")}
        )
    return mat_items, png_items


def slices_per_second(transform, items: list[dict], repeats: int) -> float:
    """Best rate over ``repeats`` passes through ``items`` (after one warm-up item)."""
    transform(items[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            transform(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64, help="phantom slices per form (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="slice width and height (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes, best kept (default: %(default)s)")
    args = parser.parse_args()

    figshare_loader = Compose(
        [
            LoadImaged(keys="image", reader=FigshareMatReader(field="image")),
            LoadImaged(keys="label", reader=FigshareMatReader(field="tumorMask")),
        ]
    )
    default_loader = LoadImaged(keys=["image", "label"])
    with tempfile.TemporaryDirectory() as folder:
        mat_items, png_items = write_both_forms(Path(folder), args.slices, args.size)
        mat_bytes = sum(os.path.getsize(item["image"]) for item in mat_items)
        png_bytes = sum(os.path.getsize(item[key]) for item in png_items for key in ("image", "label"))
        mat_rate = slices_per_second(figshare_loader, mat_items, args.repeats)
        png_rate = slices_per_second(default_loader, png_items, args.repeats)
        fallback_rate = slices_per_second(figshare_loader, png_items, args.repeats)
    print(
        json.dumps(
            {
                "benchmark": "readers",
                "slices": args.slices,
                "size": args.size,
                "repeats": args.repeats,
                "mat_slices_per_s": round(mat_rate, 1),
                "png_slices_per_s": round(png_rate, 1),
                "png_via_fallback_slices_per_s": round(fallback_rate, 1),
                "mat_over_png": round(mat_rate / png_rate, 2),
                "fallback_over_png": round(fallback_rate / png_rate, 2),
                "mat_kib_per_slice": round(mat_bytes / args.slices / 1024, 1),
                "png_kib_per_slice": round(png_bytes / args.slices / 1024, 1),
                "monai": monai.__version__,
                "machine": f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs",
            }
        )
    )


if __name__ == "__main__":
    main()
