"""TorchScript export through ``monai.bundle.ckpt_export``: metadata and inference config ride inside the file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ckpt_export

# Scripted and eager kernels agree to float rounding; a looser match would hide a wrong export.
TOLERANCE = 1e-4


def export_torchscript(bundle_dir: Path, ckpt_file: Path, filepath: Path, input_shape: Sequence[int]) -> None:
    """Script ``network_def`` of ``bundle_dir/configs/inference.json`` with the weights of ``ckpt_file``.

    ``configs/metadata.json`` and ``configs/inference.json`` are embedded as MONAI does (read them back
    with ``torch.jit.load(path, _extra_files={"metadata.json": "", "inference.json": ""})``). The scripted
    network is checked against the eager one on a random ``input_shape`` batch before it is saved.
    """
    configs = bundle_dir / "configs"
    ckpt_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(ckpt_file),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        input_shape=list(input_shape),
        converter_kwargs={"verify": True, "device": "cpu", "rtol": TOLERANCE, "atol": TOLERANCE},
        bundle_root=str(bundle_dir),
    )
