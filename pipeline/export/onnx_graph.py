"""ONNX export through ``monai.bundle.onnx_export``, with dynamic batch, height and width."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from monai.bundle import onnx_export

from pipeline.bundle_configs import bundle_config_files
from pipeline.export.torchscript import TOLERANCE

INPUT_NAME = "image"
OUTPUT_NAME = "pred"
DYNAMIC_AXES = {name: {0: "batch", 2: "height", 3: "width"} for name in (INPUT_NAME, OUTPUT_NAME)}
# The packages of the ``export`` extra (``pip install '.[export]'``) that ONNX export and its check need.
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_INSTALL_HINT = "pip install '.[export]'"


def missing_onnx_packages() -> list[str]:
    """The packages of ``ONNX_PACKAGES`` that are not installed; ONNX export needs all of them."""
    return [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]


def export_onnx(bundle_dir: Path, ckpt_file: Path, filepath: Path, input_shape: Sequence[int]) -> None:
    """Write ``network_def`` of ``bundle_dir/configs/inference.json`` with the weights of ``ckpt_file`` as ONNX.

    The graph takes ``image`` (N, C, H, W) and returns ``pred`` logits (N, classes, H, W) for any N, H, W:
    the network pads to multiples of 16 inside, and that shape arithmetic is traced symbolically. It is
    traced by the TorchScript-based exporter (``dynamo=False``) because ``torch.export`` cannot prove the
    decoder's skip-connection crop safe for symbolic sizes. The result is checked against the eager network
    in ONNX Runtime before it is saved. Needs the ``export`` extra (onnx, onnxscript, onnxruntime).
    """
    configs = bundle_dir / "configs"
    onnx_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=str(configs / "metadata.json"),
        config_file=[str(path) for path in bundle_config_files(bundle_dir, ["inference.json"])],
        input_shape=list(input_shape),
        use_trace=True,
        converter_kwargs={
            "input_names": [INPUT_NAME],
            "output_names": [OUTPUT_NAME],
            "dynamic_axes": DYNAMIC_AXES,
            "dynamo": False,
            "verify": True,
            "use_ort": True,
            "device": "cpu",
            "rtol": TOLERANCE,
            "atol": TOLERANCE,
        },
        bundle_root=str(bundle_dir),
    )
