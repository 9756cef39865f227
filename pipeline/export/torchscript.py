"""TorchScript export: the scripted network with the metadata and the MONAI-only inference config inside."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import save_net_with_metadata
from monai.networks.utils import convert_to_torchscript

# Scripted and eager kernels agree to float rounding; a looser match would hide a wrong export.
TOLERANCE = 1e-4
# The config that runs the TorchScript model with MONAI alone, and the name it is embedded under: the one MONAI
# Deploy's MonaiBundleInferenceOperator reads (``extra/inference.json``) and ``monai.bundle.load`` users ask for.
TORCHSCRIPT_CONFIG = "inference_torchscript.json"
EMBEDDED_CONFIG = "inference.json"


def export_torchscript(
    network: torch.nn.Module,
    filepath: Path,
    input_shape: Sequence[int],
    metadata: Mapping[str, Any],
    config_file: Path,
) -> None:
    """Script ``network`` (weights loaded) to ``filepath`` with ``metadata`` and ``config_file`` embedded.

    The steps of ``monai.bundle.ckpt_export``, with MONAI's own ``convert_to_torchscript`` and
    ``save_net_with_metadata``, except which config is embedded: ``ckpt_export`` embeds the config it builds the
    network from, whose ``_target_`` names this package; here ``config_file`` (``configs/inference_torchscript.json``,
    which loads the TorchScript model itself) is embedded as ``inference.json``, so whoever reads the model file needs
    MONAI only. Read it back with ``torch.jit.load(path, _extra_files={"metadata.json": "", "inference.json": ""})``
    or ``monai.data.load_net_with_metadata(path, more_extra_files=("inference.json",))``. The scripted network is
    checked against the eager one on a random ``input_shape`` batch before it is saved.
    """
    scripted = convert_to_torchscript(
        network,
        verify=True,
        inputs=[torch.rand(*input_shape)],
        device=torch.device("cpu"),
        rtol=TOLERANCE,
        atol=TOLERANCE,
    )
    config = json.dumps(ConfigParser.load_config_file(str(config_file))).encode()
    save_net_with_metadata(
        scripted,
        str(filepath),
        include_config_vals=False,
        meta_values=dict(metadata),
        more_extra_files={EMBEDDED_CONFIG: config},
    )
