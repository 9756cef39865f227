"""Training shows one summary line per epoch (loss, validation score, slices with no prediction, time left; the last
names the model); iteration losses on request."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from ignite.engine import Engine, Events
from tiny_bundle import train_tiny

from pipeline import default_bundle_dir
from pipeline.bundle_configs import bundle_parser
from pipeline.commands import train
from pipeline.handlers import EpochSummary

LOSSES = [1.0, 0.5, 0.25, 0.25]  # two iterations per epoch: means 0.75 and 0.25


def _validator(validated_epochs: set[int]) -> Engine:
    """An evaluator scoring 0.5 + epoch / 10 when the trainer's epoch is one of ``validated_epochs``."""
    validator = Engine(lambda engine, batch: None)
    validator.state.key_metric_name = "val_mean_dice"
    validator.state.best_metric, validator.state.best_metric_epoch = -1.0, -1

    def validate(trainer: Engine) -> None:
        if trainer.state.epoch in validated_epochs:
            score = 0.5 + trainer.state.epoch / 10
            validator.state.epoch, validator.state.metrics = trainer.state.epoch, {"val_mean_dice": score}
            validator.state.best_metric, validator.state.best_metric_epoch = score, trainer.state.epoch

    validator.validate = validate
    return validator


def test_one_line_per_epoch_gives_the_mean_loss_the_validation_score_when_run_and_the_time_left(caplog):
    losses = iter(LOSSES)
    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(next(losses))}])  # decollated, as MONAI has it
    validator = _validator(validated_epochs={2})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, validator.validate)  # as ValidationHandler, attached first
    EpochSummary(validator=validator).attach(trainer)
    with caplog.at_level(logging.INFO, logger="pipeline.training"):
        trainer.run([0, 1], max_epochs=2)
    first, last = [record.getMessage() for record in caplog.records if record.name == "pipeline.training"]
    assert first.startswith("epoch 1/2: loss 0.7500, about ") and first.endswith(" left")
    assert last.startswith("epoch 2/2: loss 0.2500, val_mean_dice 0.7000 (best 0.7000 at epoch 2), done in ")


@pytest.mark.parametrize("verbose", [False, True])
def test_iteration_losses_are_logged_only_with_verbose(verbose, monkeypatch, tmp_path):
    ran = {}
    monkeypatch.setattr("pipeline.preflight.require_datalist", lambda folder, lists=(): (folder, {}))
    monkeypatch.setattr(train, "_preflight", lambda *arguments: None)
    monkeypatch.setattr(
        "pipeline.workflow.run_bundle", lambda bundle, configs, kind, **overrides: ran.update(overrides)
    )
    arguments = ["--dataset-dir", str(tmp_path), *(["--verbose"] if verbose else [])]
    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers()).set_defaults(overrides=[], argv=[])
    assert train.run(parser.parse_args(["train", *arguments])) == 0
    config = bundle_parser(default_bundle_dir(), ["train.json"], {"iteration_log": ran.get("iteration_log", False)})
    handlers = config.get("train#handlers")
    (index,) = [index for index, handler in enumerate(handlers) if handler["_target_"] == "StatsHandler"]
    assert config.get_parsed_content(f"train#handlers#{index}#_disabled_") is not verbose
    assert handlers[-1]["_target_"] == "pipeline.handlers.EpochSummary"


def test_time_left_is_not_inflated_by_one_paused_epoch(caplog, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr("pipeline.handlers.epoch_summary.time.monotonic", lambda: clock["now"])

    def step(engine: Engine, batch: int) -> list[dict]:
        clock["now"] += 1000.0 if engine.state.epoch == 2 else 10.0  # epoch 2 was stopped for a quarter of an hour
        return [{"loss": torch.tensor(0.5)}]

    trainer = Engine(step)
    validator = _validator(validated_epochs={4})

    def validate(engine: Engine) -> None:
        validator.validate(engine)
        clock["now"] += 30.0 if engine.state.epoch == 4 else 0.0

    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate)
    EpochSummary(validator=validator).attach(trainer)
    with caplog.at_level(logging.INFO, logger="pipeline.training"):
        trainer.run([0], max_epochs=6)
    lines = [record.getMessage() for record in caplog.records if record.name == "pipeline.training"]
    assert lines[2].endswith("about 0m 30s left")  # 3 epochs of 10 s to go; the paused 1000 s epoch is not typical
    # after epoch 4 (10 s + 30 s of validation): plain epochs 10 s (median of 10, 1000, 10), validated 40 s, 1 in 4
    assert lines[3].endswith(f"about 0m {round(2 * (10 * 3 / 4 + 40 / 4)):02d}s left")


def test_validation_slices_with_no_prediction_are_counted_in_the_epoch_line(caplog):
    tumour = torch.zeros(2, 4, 4)
    tumour[0], tumour[1, 1:3, 1:3] = 1, 1
    tumour[0, 1:3, 1:3] = 0
    empty = torch.zeros(2, 4, 4)
    empty[0] = 1  # one-hot: background everywhere
    validator = Engine(lambda engine, batch: [{"pred": tumour}, {"pred": empty}, {"pred": empty}])
    validator.state.key_metric_name = "val_mean_dice"

    def validate(trainer: Engine) -> None:
        validator.run([0, 1], max_epochs=1)  # 2 batches of 3 slices
        validator.state.epoch, validator.state.metrics = trainer.state.epoch, {"val_mean_dice": 0.5}
        validator.state.best_metric, validator.state.best_metric_epoch = 0.5, trainer.state.epoch

    trainer = Engine(lambda engine, batch: [{"loss": torch.tensor(0.5)}])
    trainer.add_event_handler(Events.EPOCH_COMPLETED, validate)
    EpochSummary(validator=validator).attach(trainer)
    with caplog.at_level(logging.INFO, logger="pipeline.training"):
        trainer.run([0], max_epochs=1)
    (line,) = [record.getMessage() for record in caplog.records if record.name == "pipeline.training"]
    assert "val_mean_dice 0.5000 (best 0.5000 at epoch 1), no prediction on 4 of 6 slices, done in " in line


def test_a_run_shorter_than_the_validation_interval_validates_its_last_epoch_and_names_its_model(tmp_path, capsys):
    train_tiny(tmp_path, seed=3, val_interval=2, epochs=1)
    # The bundle's logging.conf sends the training log to stdout, as the user sees it.
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    (line,) = [line for line in lines if " - pipeline.training - INFO - " in line]
    assert " - INFO - epoch 1/1: loss " in line and " val_mean_dice " in line
    assert line.endswith(f"model: {tmp_path / 'models' / 'model.pt'} (epoch 1, the best validated)")
    assert lines[-1] == line  # the run's last word says where the model is
    assert (tmp_path / "models" / "model.pt").is_file()
