"""The DICOM node's speed: from the last instance of a series received to its SEG stored back, series per hour,
idle memory, and the node's overhead against ``infer``'s work on the same series read from a folder.

A phantom MR series (20 slices of 512x512 by default, ``synth --format dicom``) is pushed by a pynetdicom SCU to
``python -m pipeline serve`` (shipped model, CPU), which sends the SEG to a pynetdicom Storage SCP standing in
for the PACS. The latency runs from the release of the pushing association (the node's signal that the series
is complete, right after its last instance is acknowledged) to the SEG's arrival. Series per hour: ``--batch``
series pushed back to back, from the first instance sent to the last SEG stored. Idle memory: the node's
resident set after the model is loaded and nothing is received. The comparison: ``infer``'s work for the same
series after its start (read the folder, segment, write the SEG: the function ``infer`` runs) with the same
model in this process, right after the node's run on that series, so that load from other processes hits both
alike; ``--repeats`` series, the fastest of each side kept; overhead = node latency / infer's time - 1
(target: at most 10 %). The same in CPU seconds (the node process's, from the push to the SEG's arrival, against
this process's for ``infer``'s work), which load from other processes does not change. The full ``infer``
command on the folder, process start and model load included, is given beside it.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage, SegmentationStorage
from run_environment import run_environment

from pipeline import default_bundle_dir
from pipeline.inference.predictor import BundlePredictor
from pipeline.inference.scans import segment_dicom_folder
from pipeline.phantoms.dicom_series import write_phantom_series

NODE_AET, PACS_AET = "BRAINSEG", "BENCHPACS"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Pacs:
    """A Storage SCP that notes when each SEG arrives, by the series it references."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.event = threading.Condition()
        ae = AE(PACS_AET)
        ae.add_supported_context(SegmentationStorage)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event: evt.Event) -> int:
        source = str(event.dataset.ReferencedSeriesSequence[0].SeriesInstanceUID)
        with self.event:
            self.arrived[source] = time.perf_counter()
            self.event.notify_all()
        return 0x0000

    def wait(self, series: list[str], timeout: float = 1800) -> None:
        with self.event:
            if not self.event.wait_for(lambda: all(uid in self.arrived for uid in series), timeout):
                raise SystemExit(f"bench_node: no SEG back within {timeout:g} s")


def push(port: int, files: list[Path]) -> float:
    """C-STORE ``files`` in one association; the time of its release."""
    ae = AE(PACS_AET)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        raise SystemExit("bench_node: the node refused the association")
    for path in files:
        assoc.send_c_store(path)
    assoc.release()
    return time.perf_counter()


def series_uid(files: list[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def segment_folder(folder: Path, output: Path, segmenter) -> tuple[float, float]:
    """Wall and CPU seconds of ``infer``'s work for the series in ``folder``: read it, segment it, write its SEG."""
    wall, cpu = time.perf_counter(), time.process_time()
    written, problems = segment_dicom_folder(folder, output, segmenter)
    if problems or not written:
        raise SystemExit(f"bench_node: infer's segmentation failed: {problems}")
    return time.perf_counter() - wall, time.process_time() - cpu


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system, all threads) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_node(work: Path, pacs: Pacs) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = {
        "ae_title": NODE_AET,
        "port": port,
        "host": "127.0.0.1",
        "work_dir": str(work / "node"),
        "callers": {PACS_AET: {"host": "127.0.0.1", "port": pacs.port}},
        "model": {"device": "cpu"},
    }
    (work / "node.json").write_text(json.dumps(config))
    log = open(work / "node.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "serve", "--config", str(work / "node.json")], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 600
    while "listening as" not in (work / "node.log").read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench_node: the node did not start:\n{(work / 'node.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="slice width and height")
    parser.add_argument("--repeats", type=int, default=3, help="series timed one by one, node and infer alike")
    parser.add_argument("--batch", type=int, default=4, help="series pushed back to back for the series per hour")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        patients = args.repeats + args.batch
        files = write_phantom_series(work / "dicom", patients=patients, slices=args.slices, size=args.size, seed=0)
        by_series: dict[str, list[Path]] = {}
        for path in files:
            by_series.setdefault(path.parent.parent.name, []).append(path)
        series = list(by_series.values())

        pacs = Pacs()
        process, port = start_node(work, pacs)
        try:
            time.sleep(5)  # idle: nothing received yet
            idle_mib = resident_mib(process.pid)
            segmenter = BundlePredictor(default_bundle_dir(), {"device": "$torch.device('cpu')"}).build()
            logging.disable(logging.INFO)  # the bundle's logging.conf prints on stdout, which holds the result
            segment_folder(series[0][0].parent, work / "warm-up", segmenter.slice_segmenter)
            latencies, node_cpu, infer_series = [], [], []
            for number, one in enumerate(series[: args.repeats]):  # node and infer alternate, series by series
                cpu = cpu_seconds(process.pid)
                released = push(port, one)
                pacs.wait([series_uid(one)])
                latencies.append(pacs.arrived[series_uid(one)] - released)
                node_cpu.append(cpu_seconds(process.pid) - cpu)
                infer_series.append(segment_folder(one[0].parent, work / f"infer{number}", segmenter.slice_segmenter))
            batch = series[args.repeats :]
            start = time.perf_counter()
            for one in batch:
                push(port, one)
            pacs.wait([series_uid(one) for one in batch])
            batch_s = max(pacs.arrived[series_uid(one)] for one in batch) - start
            busy_mib = resident_mib(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=600)
            pacs.server.shutdown()

        begin = time.perf_counter()
        folder = series[0][0].parent
        command = [sys.executable, "-m", "pipeline", "infer", "--input", str(folder), "--output", str(work / "cli")]
        subprocess.run([*command, "--no-overlays", "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        infer_command_s = time.perf_counter() - begin

    latency = min(latencies)
    infer_wall, infer_cpu = min(wall for wall, _ in infer_series), min(cpu for _, cpu in infer_series)
    result = {
        "benchmark": "bench_node",
        "slices": args.slices,
        "size": args.size,
        "last_instance_to_seg_stored_s": round(latency, 2),
        "latency_runs_s": [round(value, 2) for value in latencies],
        "series_per_hour": round(len(batch) / batch_s * 3600, 1),
        "batch_series": len(batch),
        "batch_s": round(batch_s, 2),
        "idle_rss_mib": round(idle_mib, 1),
        "rss_after_work_mib": round(busy_mib, 1),
        "infer_series_s": round(infer_wall, 2),
        "infer_runs_s": [round(wall, 2) for wall, _ in infer_series],
        "overhead_vs_infer": round(latency / infer_wall - 1, 3),
        "node_cpu_per_series_s": round(min(node_cpu), 2),
        "infer_cpu_per_series_s": round(infer_cpu, 2),
        "cpu_overhead_vs_infer": round(min(node_cpu) / infer_cpu - 1, 3),
        "infer_command_s": round(infer_command_s, 2),
        **run_environment(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
