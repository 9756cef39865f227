"""Images/s of the bundle's trainer against a bare PyTorch loop doing the same work, in one process.

The bundle side is ``train#trainer`` of ``configs/train.json`` run through ``ConfigWorkflow`` with all its
handlers (LR schedule, validation -- attached, its interval set beyond the run --, stats, TensorBoard, learning
curve, the latest-checkpoint saver every epoch), reading the config's ``CacheDataset`` through its
``DataLoader``. The random augmentations are switched off (``train#random_transforms: []``) so that both sides
consume the same in-memory tensors: the ratio measures what the engine, its handlers and the data loader add to
the training steps. The bare loop uses a copy of the same network (same initial weights), the same loss,
AdamW and warm-up/cosine schedule, and batches already collated on the device, with the same autocast and
gradient scaling as the trainer. Runs alternate (bare, bundle, bare, bundle, ...) and the fastest of each is kept,
so that load from other processes hits both alike; the first ``--warmup`` iterations of every run are not timed.
Peak memory is the process's peak RSS (and the CUDA allocator's peak on a GPU).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.data import list_data_collate
from monai.optimizers import WarmupCosineSchedule
from monai.utils import convert_to_tensor
from phantom_slices import phantom_datalist
from run_environment import run_environment
from torch.utils.flop_counter import FlopCounterMode

from pipeline import default_bundle_dir
from pipeline.bundle_configs import bundle_config_files

CONFIGS = default_bundle_dir() / "configs"
# common.json first, then train.json, as every stage merges them
TRAIN_CONFIGS = [str(path) for path in bundle_config_files(default_bundle_dir(), ["train.json"])]
AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
# Dense bf16 tensor-core peaks from the vendors' data sheets; the first matching name wins.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("GH200", 989.0), ("A100", 312.0))


def bundle_workflow(args: argparse.Namespace, datalist: list[dict], work: Path) -> ConfigWorkflow:
    """``train.json`` set up for ``args``: in-memory data, no augmentation, validation attached but idle."""
    workflow = ConfigWorkflow(
        config_file=TRAIN_CONFIGS,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train",
        bundle_root=str(default_bundle_dir()),
        ckpt_dir=str(work / "models"),
        output_dir=str(work / "training"),
        image_size=args.size,
        epochs=args.epochs,
        val_interval=args.epochs + 1,
        warmup_epochs=1,
        batch_size=args.batch,
        num_workers=0,
        progress_bar=False,
        **{
            "network_def#features": args.features,
            "train#random_transforms": [],
            "train#datalist": datalist,
            "validate#datalist": datalist[: args.batch],
            **({} if args.device is None else {"device": f"$torch.device({args.device!r})"}),
            **recipe_overrides(args),
        },
    )
    workflow.initialize()
    return workflow


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The speed switches as config overrides: AMP precision, channels-last weights and ``torch.compile``."""
    overrides: dict = {}
    if args.amp_dtype:
        overrides["train#trainer#amp_kwargs"] = {"dtype": f"$torch.{AMP_DTYPES[args.amp_dtype]}"}
    if args.channels_last:
        overrides["network"] = "$@network_def.to(@device, memory_format=torch.channels_last)"
    if args.compile:
        overrides["train#trainer#compile"] = True
    return overrides


def flops_per_image(network: torch.nn.Module, size: int) -> int:
    """FLOPs of one training step (forward and backward) per image, counted on the meta device."""
    model = copy.deepcopy(network).to("meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 1, size, size, device="meta")).sum().backward()
    return counter.get_total_flops()


def peak_bf16_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU in FLOP/s, ``None`` elsewhere."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def time_bundle(trainer, warmup: int) -> tuple[float, float]:
    """Seconds the trainer spends after its first ``warmup`` iterations until its run has completed, and the part
    of them spent between epochs (epoch-end handlers such as checkpoints and the learning curve, loader restarts)."""
    marks: dict[str, float] = {"between_epochs": 0.0}

    def iteration_completed(engine) -> None:
        marks["last_iteration"] = time.perf_counter()
        if engine.state.iteration == warmup:
            marks["start"] = marks["last_iteration"]

    def epoch_boundary(engine) -> None:
        if "start" in marks:
            marks["between_epochs"] += time.perf_counter() - marks["last_iteration"]

    events = [
        trainer.add_event_handler(Events.ITERATION_COMPLETED, iteration_completed),
        trainer.add_event_handler(Events.EPOCH_STARTED, epoch_boundary),
        trainer.add_event_handler(Events.COMPLETED, epoch_boundary),
    ]
    trainer.run()
    for event in events:
        event.remove()
    return marks["last_iteration"] - marks["start"] + marks["between_epochs"], marks["between_epochs"]


def time_bare(
    workflow: ConfigWorkflow, initial_state: dict, batches: list, steps: int, warmup: int, args: argparse.Namespace
) -> float:
    """Seconds for ``steps - warmup`` plain training steps after ``warmup`` untimed ones."""
    parser = workflow.parser
    device, amp = parser.get_parsed_content("device"), parser.get_parsed_content("amp")
    network = copy.deepcopy(parser.get_parsed_content("network"))
    network.load_state_dict(initial_state)
    network.train()
    step_network = torch.compile(network) if args.compile else network
    dtype = getattr(torch, AMP_DTYPES[args.amp_dtype or "fp16"])
    loss_function = parser.get_parsed_content("loss")
    config = parser.get_parsed_content("optimizer")
    optimizer = type(config)(
        network.parameters(), lr=config.defaults["lr"], weight_decay=config.defaults["weight_decay"]
    )
    scheduler = WarmupCosineSchedule(optimizer, warmup_steps=len(batches), t_total=steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
    start = 0.0
    for step in range(steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        images, labels = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_function(step_network(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def in_memory_batches(workflow: ConfigWorkflow, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The trainer's cached training data as plain tensors on ``device``, collated into its batches."""
    dataset = workflow.parser.get_parsed_content("train#dataset")
    batch = workflow.parser.get_parsed_content("batch_size")
    items = [dataset[index] for index in range(len(dataset))]
    batches = []
    for first in range(0, len(items) - batch + 1, batch):
        collated = list_data_collate(items[first : first + batch])
        batches.append(
            tuple(convert_to_tensor(collated[key], track_meta=False).to(device) for key in ("image", "label"))
        )
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="image_size the network sees")
    parser.add_argument("--features", type=lambda s: [int(f) for f in s.split(",")], default=[8, 16, 32, 64, 128])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=12, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--unique-slices", type=int, default=32, help="phantom files made; the epoch repeats them")
    parser.add_argument(
        "--real-epoch-length",
        type=int,
        default=153,
        help="iterations per epoch to project to (figshare, 80%% at batch 16)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations at the start of every run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--device", default=None, help="default: the config's choice (CUDA if available)")
    parser.add_argument("--amp-dtype", choices=sorted(AMP_DTYPES), default=None, help="AMP precision (with amp)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (both sides)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.warmup >= args.iterations * args.epochs:
        parser.error("--warmup must be smaller than --iterations x --epochs")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        needed = args.iterations * args.batch
        unique = phantom_datalist(work / "phantoms", min(args.unique_slices, needed), size=512)
        datalist = [unique[index % len(unique)] for index in range(needed)]
        workflow = bundle_workflow(args, datalist, work)
        trainer = workflow.parser.get_parsed_content("train#trainer")
        device = workflow.parser.get_parsed_content("device")
        initial_state = copy.deepcopy(workflow.parser.get_parsed_content("network").state_dict())
        batches = in_memory_batches(workflow, device)
        steps = args.epochs * len(trainer.data_loader)
        bare, bundle, between_epochs = [], [], []
        for _ in range(args.repeats):
            bare.append(time_bare(workflow, initial_state, batches, steps, args.warmup, args))
            total, boundary = time_bundle(trainer, args.warmup)
            bundle.append(total)
            between_epochs.append(boundary)
        flops = flops_per_image(workflow.parser.get_parsed_content("network"), args.size)
        handlers = [type(h).__name__ for h in workflow.parser.get_parsed_content("train#handlers")]
        workflow.finalize()

    timed_images = (steps - args.warmup) * args.batch
    peak = peak_bf16_flops(device)
    bare_step = min(bare) / (steps - args.warmup)
    bundle_step = min(total - boundary for total, boundary in zip(bundle, between_epochs)) / (steps - args.warmup)
    epoch_end = min(between_epochs) / args.epochs
    result = {
        "benchmark": "bench_training",
        "device": str(device),
        "amp": bool(workflow.parser.get_parsed_content("amp")),
        "image_size": args.size,
        "features": args.features,
        "batch": args.batch,
        "iterations_per_epoch": len(batches),
        "epochs": args.epochs,
        "bare_images_per_s": round(timed_images / min(bare), 2),
        "bundle_images_per_s": round(timed_images / min(bundle), 2),
        "bundle_over_bare": round(min(bare) / min(bundle), 3),
        "bundle_over_bare_within_epochs": round(bare_step / bundle_step, 3),
        "epoch_end_s": round(epoch_end, 3),
        f"bundle_over_bare_at_{args.real_epoch_length}_iterations_per_epoch": round(
            bare_step / (bundle_step + epoch_end / args.real_epoch_length), 3
        ),
        "train_gflops_per_image": round(flops / 1e9, 2),
        "bundle_model_flops_utilisation": round(flops * timed_images / min(bundle) / peak, 4) if peak else None,
        "amp_dtype": args.amp_dtype,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "trainer_handlers": handlers,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cuda_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if device.type == "cuda"
        else None,
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
