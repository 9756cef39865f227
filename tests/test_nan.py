"""A NaN or infinite loss stops training with a message naming the epoch and iteration; good checkpoints stay."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine

from pipeline import default_bundle_dir
from pipeline.checkpoints import load_checkpoint
from pipeline.data.prepare import prepare_dataset
from pipeline.handlers import NonFiniteLossError, NonFiniteLossGuard
from pipeline.phantoms.slices import synthesize_dataset
from pipeline.user_errors import find_user_error
from pipeline.workflow import run_bundle


class _LossTurningNanAfter(torch.nn.Module):
    """The bundle's loss until ``calls`` iterations have run, NaN from then on."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls
        self.loss = torch.nn.CrossEntropyLoss()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls -= 1
        loss = self.loss(prediction, target[:, 0].long())
        return loss if self.calls >= 0 else loss * math.nan


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_the_guard_names_epoch_and_iteration_of_the_first_non_finite_loss(bad_value):
    losses = iter([0.5, 0.4, 0.3, 0.2, bad_value, 0.1])
    # Outputs as MONAI's trainers decollate them: one dict per item, the batch loss in each.
    engine = Engine(lambda engine, batch: [{"loss": torch.tensor(next(losses))}])
    NonFiniteLossGuard().attach(engine)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 5 \(2 of 3 in the epoch\)"):
        engine.run(range(3), max_epochs=2)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoints(tmp_path):
    synthesize_dataset(tmp_path / "raw", patients=10, slices_per_patient=2, size=128, seed=4)
    prepare_dataset(tmp_path / "raw", tmp_path / "dataset", seed=4)
    ckpt_dir = tmp_path / "models"
    with pytest.raises(Exception) as caught:
        run_bundle(
            default_bundle_dir(),
            ["train.json"],
            "train",
            dataset_dir=str(tmp_path / "dataset"),
            ckpt_dir=str(ckpt_dir),
            output_dir=str(tmp_path / "training"),
            loss=_LossTurningNanAfter(calls=4 + 2),  # 4 iterations per epoch: NaN at the 3rd of epoch 2
            image_size=32,
            epochs=3,
            warmup_epochs=0,
            batch_size=4,
            num_workers=0,
            cache_rate=0,
            progress_bar=False,
            device="$torch.device('cpu')",
            **{"network_def#features": [4, 8, 16, 32, 64]},
        )
    error = find_user_error(caught.value)
    assert isinstance(error, NonFiniteLossError), caught.value
    assert "epoch 2, iteration 7 (3 of 4 in the epoch)" in str(error) and "loss is nan" in str(error)
    checkpoints = sorted(path.name for path in ckpt_dir.iterdir() if path.suffix == ".pt")
    assert checkpoints == ["latest_checkpoint_epoch=1.pt", "model.pt"]
    for name in ("latest_checkpoint_epoch=1.pt", "model.pt"):
        state = load_checkpoint(ckpt_dir / name)
        weights = state.get("model", state)
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), name
