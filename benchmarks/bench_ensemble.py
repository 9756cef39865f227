"""Per-slice time of ``python -m pipeline infer`` with the whole fold ensemble against one of its models.

An ensemble of ``--members`` copies of the shipped network (the weights do not change the speed) is joined as
``crossval --ship`` joins fold models, then ``infer`` segments phantom ``.mat`` slices (flip TTA on,
post-processing on, NIfTI masks, no overlays) with every member as one network (as shipped), with every member
run one by one (``ProbabilityEnsemble.one_network`` off), and with ``--folds 1``, in the torch threads ``infer``
uses. Each case runs on a small and a large folder; the per-slice time is the difference over the extra slices,
so the start-up (reading configs, building the networks) is reported apart. The cases alternate, in another
order each repeat; the ratios to one model are taken within each repeat and their median reported, with the
median times. ``--cpu-time`` times the process's CPU time instead of the wall clock, with the data loaded in the
process (``--num_workers 0``): on a machine shared with other work, with ``--threads 1``, it counts the work done
and not the waits for a core. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack, redirect_stdout
from io import StringIO
from pathlib import Path
from unittest import mock

import torch
from phantom_slices import phantom_datalist
from run_environment import run_environment

from pipeline import default_bundle_dir
from pipeline.__main__ import main as pipeline_main
from pipeline.checkpoints import read_model_config
from pipeline.export.fold_ensemble import assemble_fold_ensemble
from pipeline.networks import ProbabilityEnsemble


def fold_copies(work: Path, members: int) -> Path:
    """``members`` fold folders holding the shipped network's first (or only) model, joined in ``work/ensemble``."""
    shipped = default_bundle_dir() / "models"
    definition = read_model_config(shipped)
    checkpoint = torch.load(shipped / "model.pt", weights_only=True)
    state = checkpoint.get("model", checkpoint)
    if definition["network_def"].get("_target_", "").endswith("ProbabilityEnsemble"):
        state = {name.split(".", 2)[2]: value for name, value in state.items() if name.startswith("members.0.")}
        definition = {**definition, "network_def": definition["network_def"]["member"]}
    folders = {}
    for fold in range(1, members + 1):
        folders[fold] = work / f"fold_{fold}"
        folders[fold].mkdir()
        torch.save({"model": state}, folders[fold] / "model.pt")
        (folders[fold] / "model_config.json").write_text(json.dumps(definition))
    assemble_fold_ensemble(folders, work / "ensemble")
    return work / "ensemble"


def time_infer(
    inputs: Path, ckpt_dir: Path, output: Path, options: list[str], one_by_one: bool, cpu_time: bool
) -> float:
    """Seconds of one ``infer`` run, in this process; ``one_by_one`` runs the ensemble's members one by one,
    ``cpu_time`` counts the process's CPU time (the data loaded in the process) instead of the wall clock."""
    shutil.rmtree(output, ignore_errors=True)
    arguments = ["infer", "--input", str(inputs), "--output", str(output), "--no-overlays", "--device", "cpu"]
    if cpu_time:
        options = [*options, "--num_workers", "0"]
    clock = time.process_time if cpu_time else time.perf_counter
    start = clock()
    with ExitStack() as stack:
        stack.enter_context(redirect_stdout(StringIO()))
        if one_by_one:
            stack.enter_context(mock.patch.object(ProbabilityEnsemble, "runs_as_one_network", return_value=False))
        code = pipeline_main([*arguments, "--ckpt_dir", str(ckpt_dir), *options])
    if code != 0:
        raise RuntimeError(f"infer exited with {code}")
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=4, help="models in the ensemble")
    parser.add_argument("--slices", type=int, default=24, help="slices of the large folder (the small one: 4)")
    parser.add_argument("--size", type=int, default=512, help="phantom slice size on disk (figshare: 512)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cpu-time", action="store_true", help="time the CPU time, data loaded in the process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ensemble = fold_copies(work, args.members)
        folders = {}
        for count in (4, args.slices):
            folders[count] = work / f"in_{count}"
            files = {Path(entry["image"]) for entry in phantom_datalist(folders[count], count, args.size)}
            for extra in folders[count].glob("*.mat"):
                if extra not in files:
                    extra.unlink()  # the fold table and the slices beyond the count are not inputs
        # name: (infer's options, members one by one)
        cases = {"ensemble": ([], False), "ensemble_one_by_one": ([], True), "one_model": (["--folds", "1"], False)}
        per_slice = {case: [] for case in cases}
        startup = {case: [] for case in cases}
        extra = args.slices - 4
        for repeat in range(args.repeats):
            order = list(cases)[repeat % len(cases) :] + list(cases)[: repeat % len(cases)]
            for case in order:
                options, one_by_one = cases[case]
                seconds = {
                    count: time_infer(inputs, ensemble, work / "out", options, one_by_one, args.cpu_time)
                    for count, inputs in folders.items()
                }
                per_slice[case].append((seconds[args.slices] - seconds[4]) / extra)
                startup[case].append(seconds[4] - 4 * per_slice[case][-1])

    one_model = per_slice["one_model"]
    ratios = {
        f"{case}_over_one_model": [many / one for many, one in zip(per_slice[case], one_model, strict=True)]
        for case in ("ensemble", "ensemble_one_by_one")
    }
    result = {
        "benchmark": "bench_ensemble",
        "members": args.members,
        "source_size": args.size,
        "slices": args.slices,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "clock": "process CPU time" if args.cpu_time else "wall",
        **{f"{case}_s_per_slice": round(statistics.median(times), 4) for case, times in per_slice.items()},
        **{name: round(statistics.median(values), 2) for name, values in ratios.items()},
        "ratios_per_repeat": {name: [round(value, 2) for value in values] for name, values in ratios.items()},
        "startup_s": {case: round(statistics.median(times), 2) for case, times in startup.items()},
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
