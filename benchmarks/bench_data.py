"""Slices/s through the bundle's training transforms, uncached and cached, against what training consumes.

The transforms are ``train#preprocessing`` of ``configs/train.json`` (read ``.mat``, resize, normalise, then the
random flips, affine, intensity and noise augmentations), parsed with MONAI's ``ConfigParser`` and fed phantom
slices in the figshare layout made on the fly. "uncached" runs every transform for every slice (``Dataset``);
"cached" is the bundle's ``CacheDataset``, which keeps the deterministic transforms' output in memory (the time
to fill it is reported apart) so that only the random ones run per slice. Each is read through a ``DataLoader``
with 0, 1 and 2 worker processes; the first batch (worker start-up) is not timed. The consumption rate is that of
plain training steps (forward, loss, backward, AdamW) of the bundle's network at the same size, width and batch
in the same process, so ``cached_over_consumption`` says how many times faster the loader can feed the trainer.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset
from monai.utils import convert_to_tensor
from phantom_slices import phantom_datalist
from run_environment import run_environment

from pipeline import default_bundle_dir
from pipeline.bundle_configs import bundle_config_files

# common.json first, then train.json, as every stage merges them
CONFIGS = [str(path) for path in bundle_config_files(default_bundle_dir(), ["train.json"])]


def slices_per_second(dataset: Dataset, batch: int, workers: int) -> float:
    """Slices/s read from ``dataset`` by a ``DataLoader`` with ``workers`` processes, first batch untimed."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for images in iterator:
        count += len(images["image"])
    return count / (time.perf_counter() - start)


def training_steps_per_second(parser: ConfigParser, dataset: Dataset, batch: int, steps: int) -> float:
    """Slices/s consumed by plain training steps of the config's network, loss and optimiser, data in memory."""
    network = parser.get_parsed_content("network_def")
    loss_function = parser.get_parsed_content("loss")
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    items = DataLoader(dataset, batch_size=batch, num_workers=0)
    images, labels = (convert_to_tensor(value, track_meta=False) for value in next(iter(items)).values())
    for step in range(steps + 1):
        if step == 1:  # the first step pays one-time costs
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_function(network(images), labels).backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image_size the network sees")
    parser.add_argument("--source-size", type=int, default=512, help="phantom slice size on disk (figshare: 512)")
    parser.add_argument("--features", type=lambda s: [int(f) for f in s.split(",")], default=[16, 32, 64, 128, 256])
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps for the consumption rate")
    parser.add_argument("--workers", type=lambda s: [int(w) for w in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    config = ConfigParser()
    config.read_config(CONFIGS)
    config.update({"image_size": args.size, "network_def#features": args.features, "device": "$torch.device('cpu')"})
    with tempfile.TemporaryDirectory() as tmp:
        datalist = phantom_datalist(Path(tmp), args.slices, size=args.source_size)
        transform = config.get_parsed_content("train#preprocessing")
        uncached = Dataset(datalist, transform)
        start = time.perf_counter()
        cached = CacheDataset(datalist, transform, cache_rate=1.0, num_workers=0, progress=False)
        cache_fill = len(datalist) / (time.perf_counter() - start)
        rates = {
            f"{name}_workers{workers}": round(slices_per_second(dataset, args.batch, workers), 1)
            for workers in args.workers
            for name, dataset in (("uncached", uncached), ("cached", cached))
        }
        consumption = training_steps_per_second(config, cached, args.batch, args.steps)

    best_cached = max(rate for key, rate in rates.items() if key.startswith("cached"))
    result = {
        "benchmark": "bench_data",
        "image_size": args.size,
        "source_size": args.source_size,
        "features": args.features,
        "batch": args.batch,
        "slices": args.slices,
        "slices_per_s": rates,
        "cache_fill_slices_per_s": round(cache_fill, 1),
        "training_consumes_slices_per_s": round(consumption, 2),
        "cached_over_consumption": round(best_cached / consumption, 1),
        "uncached_workers0_over_consumption": round(rates.get("uncached_workers0", 0.0) / consumption, 1),
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
