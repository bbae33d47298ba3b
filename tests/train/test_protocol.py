"""The paper's schedule on a tiny model whose validation losses the test dictates: the learning rate halves at the 5th
epoch in a row without a better validation loss, early stopping stops at its patience, and the weights of the best
validation epoch are the ones the run ends with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


class TinyRegressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, y):
        return SimpleNamespace(loss=torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y))


def _collate(rows):
    return {"x": torch.stack([r["x"] for r in rows]), "y": torch.stack([r["y"] for r in rows])}


def _fit(tmp_path, val_losses: list[float], *options: str):
    """Train TinyRegressor with the training scripts' own arguments; the validation loss of epoch e is val_losses[e].
    Returns the loop and the model's weights as they were when each epoch was validated."""
    from emvision.train.classify import parse_args
    from emvision.train.loop.trainer import TrainingLoop, make_accelerator

    args = parse_args(["--recipe", "paper", "--output_dir", str(tmp_path / "run"), "--max_train_steps", "0", "--report_to", "none", "--checkpointing_steps", "no",
                       "--per_device_train_batch_size", "2", "--num_train_epochs", str(len(val_losses)), *options])
    accelerator = make_accelerator(args)
    generator = torch.Generator().manual_seed(0)
    rows = [{"x": torch.randn(4, generator=generator), "y": torch.randn((), generator=generator)} for _ in range(4)]
    loop = TrainingLoop.from_splits(accelerator, args, TinyRegressor(), rows, rows, _collate, project="protocol-test")
    scripted, weights = iter(val_losses), []

    def validation_loss():
        weights.append({k: v.detach().clone() for k, v in accelerator.unwrap_model(loop.model).state_dict().items()})
        return {"val_loss": next(scripted)}

    loop.validation_loss = validation_loss
    loop.fit()
    return loop, weights


def test_learning_rate_halves_at_the_fifth_stagnant_epoch(tmp_path, single_thread):
    # epochs 2-6 stagnate (the 5th: epoch 6); epoch 7 improves; epochs 8-12 stagnate again (the 5th: epoch 12)
    losses = [1.0, 0.8, 0.9, 0.9, 0.85, 0.95, 0.9, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9]
    loop, _ = _fit(tmp_path, losses, "--early_stopping_patience", "50")  # --lr_patience 5, --lr_factor 0.5: the defaults
    lrs = [record["lr"] for record in loop.state.history]
    assert lrs == [1e-3] * 6 + [5e-4] * 6 + [2.5e-4]


def test_lr_patience_counts_stagnant_epochs_for_any_value(tmp_path, single_thread):
    loop, _ = _fit(tmp_path, [1.0, 1.1, 1.2, 1.3, 1.4], "--lr_patience", "2", "--early_stopping_patience", "50")
    assert [record["lr"] for record in loop.state.history] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]


def test_early_stopping_stops_at_its_patience_and_the_best_weights_are_restored(tmp_path, single_thread):
    # best at epoch 1; epochs 2, 3, 4 are not better (0.8 equals it): patience 3 stops after epoch 4, before the 0.1
    losses = [1.0, 0.8, 0.9, 0.8, 0.95, 0.1, 0.1]
    loop, weights = _fit(tmp_path, losses, "--early_stopping_patience", "3")
    assert [record["epoch"] for record in loop.state.history] == [0, 1, 2, 3, 4]
    assert (loop.early_stopping.best_epoch, loop.early_stopping.best) == (1, 0.8)
    final = loop.accelerator.unwrap_model(loop.model).state_dict()
    assert all(not torch.equal(weights[1][name], weights[4][name]) for name in final), "training went on after the best epoch"
    for name, tensor in final.items():
        assert torch.equal(tensor, weights[1][name]), name
    assert [record["lr"] for record in loop.state.history] == [1e-3] * 5


def test_a_smaller_loss_of_any_size_is_better_for_every_rule(tmp_path, single_thread):
    """A relative improvement of 1e-6 resets the plateau count as it resets early stopping (no hidden threshold)."""
    losses = [1.0, 1.0 - 1e-6, 1.0 - 2e-6, 1.0 - 3e-6, 1.0 - 4e-6, 1.0 - 5e-6, 1.0 - 6e-6]
    loop, _ = _fit(tmp_path, losses, "--lr_patience", "1", "--early_stopping_patience", "1")
    assert [record["lr"] for record in loop.state.history] == [1e-3] * 7
    assert loop.early_stopping.best_epoch == 6


@pytest.mark.parametrize("value", ["0", "-1"])
def test_lr_patience_must_be_at_least_one(value, capsys):
    from emvision.train.vqa import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--lr_patience", value])
    assert "--lr_patience" in capsys.readouterr().err
