"""The learning-rate schedules and the optimizer choice (train/loop/schedule.py)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from emvision.train.loop.arguments import add_training_args
from emvision.train.loop.schedule import LearningRateSchedule, build_optimizer


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    return parser.parse_args(list(argv))


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


def _lr(schedule: LearningRateSchedule) -> float:
    return schedule.optimizer.param_groups[0]["lr"]


def test_plateau_halves_at_the_fifth_stagnant_epoch_and_counts_again_after():
    args = _args()  # the papers' defaults: Adam 1e-3, plateau, patience 5, factor 0.5
    schedule = LearningRateSchedule.from_args(build_optimizer(_model(), args), args, total_steps=100)
    assert _lr(schedule) == pytest.approx(1e-3)
    assert schedule.epoch_end(1.0, 10) is False  # the best so far
    rates = []
    for _ in range(5):
        rates.append((schedule.epoch_end(1.2, 10), _lr(schedule)))
    assert rates[:4] == [(False, pytest.approx(1e-3))] * 4
    assert rates[4] == (True, pytest.approx(5e-4)), "'stagnates for 5 epochs': the 5th stagnant epoch halves"
    for _ in range(4):
        assert schedule.epoch_end(1.2, 10) is False
    assert schedule.epoch_end(1.2, 10) is True and _lr(schedule) == pytest.approx(2.5e-4)
    schedule.epoch_end(0.9, 10)  # a better loss resets the count
    assert [schedule.epoch_end(1.0, 10) for _ in range(5)] == [False] * 4 + [True]
    schedule.step(11)  # steps within an epoch keep the halved rate
    assert _lr(schedule) == pytest.approx(1.25e-4)


def test_cosine_warms_up_linearly_then_decays_to_the_floor_at_the_last_step():
    args = _args("--lr_scheduler", "cosine", "--warmup_steps", "10", "--min_lr_ratio", "0.1", "--learning_rate", "2e-3")
    schedule = LearningRateSchedule.from_args(build_optimizer(_model(), args), args, total_steps=110)
    assert _lr(schedule) == pytest.approx(2e-4)  # step 0 of 10: 1/10 of the peak
    schedule.step(4)
    assert _lr(schedule) == pytest.approx(1e-3)
    schedule.step(10)
    assert _lr(schedule) == pytest.approx(2e-3)
    schedule.step(60)  # half-way through the decay: the mean of peak and floor
    assert _lr(schedule) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))
    schedule.step(110)
    assert _lr(schedule) == pytest.approx(2e-4)
    assert schedule.epoch_end(5.0, 110) is False and [schedule.epoch_end(6.0, 110) for _ in range(8)] == [False] * 8


def test_adamw_decays_weight_matrices_only_and_adam_keeps_the_papers_l2():
    model = _model()
    optimizer = build_optimizer(model, _args("--optimizer", "adamw", "--weight_decay", "0.05"))
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert {p.ndim for p in decayed["params"]} == {2} and {p.ndim for p in plain["params"]} == {1}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
    adam = build_optimizer(model, _args("--weight_decay", "0.01"))
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize("argv", [("--optimizer", "adamw", "--weight_decay", "0.05"), ("--weight_decay", "0.01")])
def test_the_fused_optimizer_makes_the_same_updates_as_the_per_tensor_one(argv):
    torch.manual_seed(0)
    model, reference = _model(), _model()
    reference.load_state_dict(model.state_dict())
    initial = model[0].weight.detach().clone()
    optimizer = build_optimizer(model, _args(*argv))
    assert all(group["fused"] for group in optimizer.param_groups)
    # the same groups over the twin's parameters, with torch's per-tensor implementation
    twin = dict(zip(map(id, model.parameters()), reference.parameters()))
    per_tensor = type(optimizer)([{**group, "params": [twin[id(p)] for p in group["params"]], "fused": None, "foreach": False}
                                  for group in optimizer.param_groups])
    inputs = torch.randn(16, 4)
    for _ in range(5):
        for net, opt in ((model, optimizer), (reference, per_tensor)):
            opt.zero_grad()
            net(inputs).square().mean().backward()
            opt.step()
    for fused_weight, plain_weight in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(fused_weight, plain_weight)
    assert not torch.equal(model[0].weight, initial), "the steps moved the weights"


def test_a_resumed_schedule_continues_the_same_curve():
    args = _args("--lr_patience", "2")
    first = LearningRateSchedule.from_args(build_optimizer(_model(), args), args, total_steps=50)
    for loss in (1.0, 1.1, 1.1, 1.2):  # halved once, one stagnant epoch counted since
        first.epoch_end(loss, 20)
    saved = first.state_dict()
    resumed = LearningRateSchedule.from_args(build_optimizer(_model(), args), args, total_steps=50)
    resumed.load_state_dict(saved, 20)
    assert _lr(resumed) == pytest.approx(5e-4)
    assert resumed.epoch_end(1.3, 21) is True and first.epoch_end(1.3, 21) is True
    assert _lr(resumed) == _lr(first) == pytest.approx(2.5e-4)
    cosine = _args("--lr_scheduler", "cosine")
    with pytest.raises(ValueError, match="--lr_scheduler plateau"):
        LearningRateSchedule.from_args(build_optimizer(_model(), cosine), cosine, total_steps=50).load_state_dict(saved, 20)


def test_checkpoints_of_torch_plateau_scheduler_still_resume():
    args = _args()
    earlier = build_optimizer(_model(), args)
    old = torch.optim.lr_scheduler.ReduceLROnPlateau(earlier, factor=0.5, patience=5)
    for loss in [1.0] + [1.5] * 7:
        old.step(loss)
    assert earlier.param_groups[0]["lr"] == pytest.approx(5e-4)
    optimizer = build_optimizer(_model(), args)  # a new run: the peak rate, then the checkpoint's optimizer state
    schedule = LearningRateSchedule.from_args(optimizer, args, total_steps=10)
    optimizer.param_groups[0]["lr"] = earlier.param_groups[0]["lr"]
    schedule.load_state_dict(old.state_dict(), 3)
    assert schedule.plateau_factor == pytest.approx(0.5) and schedule.best == 1.0 and schedule.bad_epochs == old.num_bad_epochs
    assert math.isclose(_lr(schedule), 5e-4)
