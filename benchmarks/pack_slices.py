"""Pack a folder of figshare PNG slices compactly, to carry it to a machine without network, and unpack it there.

    python benchmarks/pack_slices.py pack SRC OUT [--exact-folds 4] [--step 5]
    python benchmarks/pack_slices.py unpack OUT DEST [--workers 16]

SRC is the PNG conversion's layout (images/N.png, masks/N.png, meta.csv with a fold column). ``pack`` writes
OUT/images.zip (one lossless WebP per image, stored), OUT/masks.npz (every mask as one bit per pixel) and a copy
of meta.csv; ``unpack`` rebuilds the PNG folder, 8-bit greyscale, masks {0, 255}.

Exact: the masks, meta.csv and the images of --exact-folds (the validation fold, on which the Dice is measured).
The other images (the training folds) are requantised to multiples of --step grey levels before their lossless
WebP, so each of their pixels is off by at most step // 2 (2 of 255 for step 5), below the training
augmentation's own intensity noise. Lossless WebP of every image keeps ~86 % of the PNG bytes (62 MB for the
2400 dev256 slices), too much for a 64 MiB transfer; this packing takes 44 MB.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def pack(src: Path, out: Path, exact_folds: list[str], step: int) -> None:
    rows = list(csv.DictReader(open(src / "meta.csv", newline="")))
    out.mkdir(parents=True, exist_ok=True)
    indices, masks = [], []
    with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_STORED) as archive:
        for row in rows:
            index = int(row["index"])
            image = np.asarray(Image.open(src / "images" / f"{index}.png"))
            mask = np.asarray(Image.open(src / "masks" / f"{index}.png"))
            if image.dtype != np.uint8 or image.ndim != 2 or not set(np.unique(mask)) <= {0, 255}:
                raise ValueError(f"slice {index}: not an 8-bit greyscale image with a {{0, 255}} mask")
            if row["fold"] not in exact_folds:
                image = np.clip(np.rint(image / step) * step, 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "WEBP", lossless=True, quality=100, method=4)
            archive.writestr(f"images/{index}.webp", buffer.getvalue())
            indices.append(index)
            masks.append(mask > 0)
    bits = np.packbits(np.stack(masks))
    np.savez_compressed(out / "masks.npz", index=np.array(indices), shape=np.array(masks[0].shape), bits=bits)
    shutil.copyfile(src / "meta.csv", out / "meta.csv")


def _greyscale(data: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    if pixels.ndim == 3:  # WebP decodes greyscale as RGB(A) with equal channels
        if not ((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()):
            raise ValueError("a packed image is not greyscale")
        pixels = pixels[..., 0]
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _write_images(packed: Path, dest: Path, names: list[str]) -> int:
    with zipfile.ZipFile(packed / "images.zip") as archive:
        for name in names:
            image = Image.fromarray(_greyscale(archive.read(name)))
            image.save(dest / "images" / f"{Path(name).stem}.png", compress_level=1)
    return len(names)


def unpack(packed: Path, dest: Path, workers: int) -> None:
    for folder in ("images", "masks"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(packed / "meta.csv", dest / "meta.csv")
    with zipfile.ZipFile(packed / "images.zip") as archive:
        names = [name for name in archive.namelist() if name.endswith(".webp")]
    chunks = [names[start::workers] for start in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        images = sum(pool.map(_write_images, [packed] * workers, [dest] * workers, chunks))
    with np.load(packed / "masks.npz") as stored:
        shape, indices = tuple(int(side) for side in stored["shape"]), stored["index"]
        bits = np.unpackbits(stored["bits"], count=len(indices) * shape[0] * shape[1])
    for index, mask in zip(indices, bits.reshape(len(indices), *shape)):
        Image.fromarray(mask * np.uint8(255)).save(dest / "masks" / f"{index}.png", compress_level=1)
    print(f"unpacked {images} images and {len(indices)} masks into {dest}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="pack SRC into OUT")
    packing.add_argument("src", type=Path)
    packing.add_argument("out", type=Path)
    packing.add_argument("--exact-folds", nargs="*", default=["4"], help="folds whose images stay exact")
    packing.add_argument("--step", type=int, default=5, help="requantisation step of the other images")
    unpacking = commands.add_parser("unpack", help="rebuild the PNG folder DEST from OUT")
    unpacking.add_argument("packed", type=Path)
    unpacking.add_argument("dest", type=Path)
    unpacking.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.src, args.out, args.exact_folds, args.step)
    else:
        unpack(args.packed, args.dest, args.workers)


if __name__ == "__main__":
    main()
