"""Training-step speed of UNet2D against MONAI's BasicUNet at matched widths, contiguous and channels_last.

For each first width w the two networks get the same width at every resolution level: UNet2D
``features=(w, 2w, 4w, 8w, 16w)`` and BasicUNet ``features=(w, 2w, 4w, 8w, 16w, w)`` (its sixth entry is the
last decoder width), both with ReLU, 2x2 transposed-convolution upsampling and the same normalisation. One step is
forward + cross-entropy + backward on a random batch. FLOPs are counted once per network with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no computation); the timed steps run the four
(network, memory format) variants of a width round-robin so that load from other processes hits them alike, and
the fastest of ``--iters`` steps is reported (the first step of a shape also pays one-time costs such as oneDNN
kernel generation and first-touch of its memory).

Prints one JSON line.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import monai
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.networks import UNet2D

NETWORKS = ("UNet2D", "BasicUNet")
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def build(network: str, width: int, norm: str | None) -> nn.Module:
    """The network ``network`` with first width ``width``, widths doubling per level, 1 input and 2 output channels."""
    widths = (width, 2 * width, 4 * width, 8 * width, 16 * width)
    if network == "UNet2D":
        return UNet2D(in_channels=1, out_channels=2, features=widths, norm=norm)
    monai_norm = ("instance", {"affine": True}) if norm == "instance" else norm
    return BasicUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        features=(*widths, width),
        act="relu",
        norm=monai_norm,
        bias=norm is None,
        upsample="deconv",
    )


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One forward + loss + backward pass; gradients are dropped so every step allocates alike."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()


def step_flops(network: str, width: int, norm: str | None, batch: int, size: int) -> int:
    """FLOPs of one training step, counted on the meta device."""
    with torch.device("meta"):
        model = build(network, width, norm)
        images = torch.empty(batch, 1, size, size)
        labels = torch.zeros(batch, size, size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        train_step(model, images, labels)
    return counter.get_total_flops()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where available, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bench_width(width: int, args: argparse.Namespace) -> list[dict]:
    """Time every (network, memory format) variant of one width; one row each."""
    norm = None if args.norm == "none" else args.norm
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 1, args.size, args.size, generator=generator)
    labels = torch.randint(0, 2, (args.batch, args.size, args.size), generator=generator)
    variants = []
    for network in NETWORKS:
        torch.manual_seed(0)
        model = build(network, width, norm).train()
        flops = step_flops(network, width, norm, args.batch, args.size)
        for format_name, memory_format in MEMORY_FORMATS.items():
            variants.append(
                {
                    "network": network,
                    "memory_format": format_name,
                    "model": model,
                    "images": images.contiguous(memory_format=memory_format),
                    "flops": flops,
                    "parameters": sum(parameter.numel() for parameter in model.parameters()),
                    "seconds": [],
                }
            )
    for iteration in range(args.warmup + args.iters):
        # Rotate the order each round so no variant always runs first or last.
        order = variants[iteration % len(variants) :] + variants[: iteration % len(variants)]
        for variant in order:
            variant["model"].to(memory_format=MEMORY_FORMATS[variant["memory_format"]])
            start = time.perf_counter()
            train_step(variant["model"], variant["images"], labels)
            if iteration >= args.warmup:
                variant["seconds"].append(time.perf_counter() - start)
    rows = []
    for variant in variants:
        # Other processes only ever add time: the fastest step is the best estimate of the network's own cost.
        seconds = min(variant["seconds"])
        rows.append(
            {
                "width": width,
                "network": variant["network"],
                "memory_format": variant["memory_format"],
                "parameters": variant["parameters"],
                "gflop_per_step": round(variant["flops"] / 1e9, 2),
                "seconds_per_step": round(seconds, 3),
                "images_per_s": round(args.batch / seconds, 3),
                "gflops_per_s": round(variant["flops"] / seconds / 1e9, 2),
            }
        )
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """UNet2D / BasicUNet and channels_last / contiguous throughput ratios (images/s) within this run."""
    speed = {(row["width"], row["network"], row["memory_format"]): row["images_per_s"] for row in rows}
    result = []
    for width in sorted({row["width"] for row in rows}):
        entry = {"width": width}
        for format_name in MEMORY_FORMATS:
            entry[f"unet2d_over_basicunet_{format_name}"] = round(
                speed[width, "UNet2D", format_name] / speed[width, "BasicUNet", format_name], 3
            )
        for network in NETWORKS:
            entry[f"channels_last_over_contiguous_{network}"] = round(
                speed[width, network, "channels_last"] / speed[width, network, "contiguous"], 3
            )
        result.append(entry)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="first widths (doubling per level)")
    parser.add_argument("--size", type=int, default=256, help="square image side")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--iters", type=int, default=2, help="timed steps per variant (the fastest is reported)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps per variant before the timed ones")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--norm", choices=["none", "batch", "instance"], default="none", help="normalisation of both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    rows = [row for width in args.widths for row in bench_width(width, args)]
    report = {
        "benchmark": "unet_train_step",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cpu": cpu_name(),
        "threads": args.threads,
        "size": args.size,
        "batch": args.batch,
        "iters": args.iters,
        "warmup": args.warmup,
        "norm": args.norm,
        "rows": rows,
        "ratios": ratios(rows),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
