"""Per-slice time of ``python -m pipeline infer`` with the whole fold ensemble against one of its models.

An ensemble of ``--members`` copies of the shipped network (the weights do not change the speed) is joined as
``crossval --ship`` joins fold models, then ``infer`` segments full-resolution phantom ``.mat`` slices (flip
TTA on, post-processing on, NIfTI masks, no overlays) once with every member and once with ``--folds 1``.
Each side runs on a small and a large folder, alternating, the fastest of ``--repeats`` kept; the per-slice
time is the difference over the extra slices, so the start-up (reading configs, building the networks) is
reported apart. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import torch
from phantom_slices import phantom_datalist
from run_environment import run_environment

from pipeline import default_bundle_dir
from pipeline.__main__ import main as pipeline_main
from pipeline.checkpoints import read_model_config
from pipeline.export.fold_ensemble import assemble_fold_ensemble


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


def time_infer(inputs: Path, ckpt_dir: Path, output: Path, options: list[str]) -> float:
    """Seconds of one ``infer`` run, in this process."""
    shutil.rmtree(output, ignore_errors=True)
    arguments = ["infer", "--input", str(inputs), "--output", str(output), "--no-overlays", "--device", "cpu"]
    start = time.perf_counter()
    with redirect_stdout(StringIO()):
        code = pipeline_main([*arguments, "--ckpt_dir", str(ckpt_dir), *options])
    if code != 0:
        raise RuntimeError(f"infer exited with {code}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=4, help="models in the ensemble")
    parser.add_argument("--slices", type=int, default=24, help="slices of the large folder (the small one: 4)")
    parser.add_argument("--size", type=int, default=512, help="phantom slice size on disk (figshare: 512)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each case, alternating")
    args = parser.parse_args()

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
        cases = {"ensemble": [], "one_model": ["--folds", "1"]}
        best = {(case, count): float("inf") for case in cases for count in folders}
        for _ in range(args.repeats):
            for case, options in cases.items():
                for count, inputs in folders.items():
                    seconds = time_infer(inputs, ensemble, work / "out", options)
                    best[case, count] = min(best[case, count], seconds)

    extra = args.slices - 4
    per_slice = {case: (best[case, args.slices] - best[case, 4]) / extra for case in cases}
    result = {
        "benchmark": "bench_ensemble",
        "members": args.members,
        "source_size": args.size,
        "slices": args.slices,
        "ensemble_s_per_slice": round(per_slice["ensemble"], 4),
        "one_model_s_per_slice": round(per_slice["one_model"], 4),
        "ensemble_over_one_model": round(per_slice["ensemble"] / per_slice["one_model"], 2),
        "startup_s": {case: round(best[case, 4] - 4 * per_slice[case], 2) for case in cases},
        **run_environment(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
