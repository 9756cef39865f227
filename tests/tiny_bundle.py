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
