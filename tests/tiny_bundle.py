"""Overrides that shrink the bundle to seconds on a CPU: a 4-wide U-Net at 32 px, one epoch, no workers."""

TINY_NETWORK = {"image_size": 32, "network_def#features": [4, 8, 16, 32, 64]}

TINY_TRAINING = {
    **TINY_NETWORK,
    "epochs": 1,
    "warmup_epochs": 0,
    "batch_size": 4,
    "num_workers": 0,
    "progress_bar": False,
    "device": "$torch.device('cpu')",
}

# A 1x1 convolution whose tumour logit wins exactly where the normalised image exceeds 0.5: a "model" whose mask
# is known in advance, whatever the input's size or orientation. Save it with ``save_threshold_network``.
THRESHOLD_NETWORK = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}


def save_threshold_network(path) -> None:
    """Save the weights of ``THRESHOLD_NETWORK`` that make it mark the bright half of a slice at ``path``."""
    import torch

    network = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        network.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1))
        network.bias.copy_(torch.tensor([0.5, -0.5]))
    torch.save(network.state_dict(), path)


def trained_looking_unet(seed: int, **kwargs):
    """A 4-wide U-Net in eval mode whose norms hold running statistics and affine weights far from their initial
    values, as after training, so that a member computed with another member's statistics would differ."""
    import torch

    from pipeline.networks import UNet2D

    torch.manual_seed(seed)
    network = UNet2D(features=TINY_NETWORK["network_def#features"], **kwargs)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and module.bias is not None:
                module.bias.uniform_(-0.1, 0.1)
    return network.eval()


def phantom_dataset(root, seed: int, patients: int = 10):
    """Phantom figshare slices (2 per patient, 128 px) in ``root/raw``, prepared into ``root/dataset``; returns it."""
    from pipeline.data.prepare import prepare_dataset
    from pipeline.phantoms.slices import synthesize_dataset

    synthesize_dataset(root / "raw", patients=patients, slices_per_patient=2, size=128, seed=seed)
    prepare_dataset(root / "raw", root / "dataset", seed=seed)
    return root / "dataset"


def train_tiny(root, seed: int, **overrides) -> None:
    """One epoch of the bundle's ``train.json`` with ``TINY_TRAINING`` (and ``overrides``) on
    ``phantom_dataset(root, seed)``.

    Writes ``root/models`` (``model.pt``, ``model_config.json``, the latest checkpoint) and ``root/training``.
    """
    from pipeline import default_bundle_dir
    from pipeline.workflow import run_bundle

    phantom_dataset(root, seed=seed)
    run_bundle(
        default_bundle_dir(),
        ["train.json"],
        "train",
        dataset_dir=str(root / "dataset"),
        ckpt_dir=str(root / "models"),
        output_dir=str(root / "training"),
        **{**TINY_TRAINING, **overrides},
    )
