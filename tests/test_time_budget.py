"""train.max_minutes plans the run: the steps that fit in the budget, the schedule laid out to end
with them, and a resumed run that keeps its plan (ldm/stages/time_budget.py)."""

import math
import time

import lightning as L
import pytest
import torch

from ldm.data.config import DataConfig
from ldm.data.datamodule import ImageCaptionDataModule
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.run_config import RunConfig, TrainConfig
from ldm.stages.time_budget import PlannedSchedule, TimeBudget, run_share
from ldm.stages.trainer import fit, lr_scheduler


class SlowStep(L.LightningModule):
    """A tiny denoiser whose every step takes at least `sleep` seconds; it records its learning rates."""

    def __init__(self, train: TrainConfig, sleep: float, sleep_until: int | None = None):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.train_cfg, self.sleep, self.sleep_until, self.rates = train, sleep, sleep_until, []

    def training_step(self, batch, batch_idx):
        if self.sleep_until is None or self.global_step < self.sleep_until:
            time.sleep(self.sleep)
        self.rates.append(self.optimizers().param_groups[0]["lr"])
        x = batch["pixel_values"]
        return torch.nn.functional.mse_loss(self.net(x + 0.1 * torch.randn_like(x)), x)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.train_cfg.lr)
        return {"optimizer": optimizer, "lr_scheduler": lr_scheduler(optimizer, self.train_cfg)}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=30, size=16, seed=0)


def config(run_dir, data, minutes, **train) -> RunConfig:
    settings = dict(max_steps=100_000, max_minutes=minutes, lr=1e-2, lr_schedule="cosine", warmup_steps=5,
                    val_every_n_steps=1000, checkpoint_every_n_steps=20, keep_checkpoints=100, log_every_n_steps=5)
    return RunConfig(stage="toy", run_dir=str(run_dir),
                     data=DataConfig(source=str(data), resolution=16, batch_size=4, val_fraction=0.2),
                     train=TrainConfig(**{**settings, **train}))


def train(cfg: RunConfig, sleep: float, sleep_until: int | None = None) -> tuple[SlowStep, L.Trainer]:
    L.seed_everything(0)
    module = SlowStep(cfg.train, sleep, sleep_until)
    trainer = fit(cfg, module, ImageCaptionDataModule(cfg.data))
    return module, trainer


def plan_of(trainer: L.Trainer) -> TimeBudget:
    return next(c for c in trainer.callbacks if isinstance(c, TimeBudget))


def test_the_schedules_match_transformers_and_end_at_zero():
    from transformers import get_scheduler

    names = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
    for kind, name in names.items():
        ours = PlannedSchedule(kind, warmup_steps=10, total_steps=100)
        theirs = get_scheduler(name, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                               num_warmup_steps=10, num_training_steps=100).lr_lambdas[0]
        for step in range(0, 101, 3):  # past the end, transformers' cosine rises again; ours stays at 0
            assert math.isclose(ours(step), theirs(step), abs_tol=1e-9), (kind, step)
    assert PlannedSchedule("cosine", 10, 100)(100) == 0.0


def test_a_slower_step_plans_fewer_steps_and_still_ends_its_cosine(tmp_path, shapes, capsys):
    minutes = 0.08  # 4.8 s
    # no checkpoints mid-run: their writing is a cost the warm-up does not see (a test this short
    # would spend its 3% margin on them and be stopped by the clock a step before its plan)
    quiet = dict(checkpoint_every_n_steps=100_000)
    fast_module, fast = train(config(tmp_path / "fast", shapes, minutes, **quiet), sleep=0.03)
    slow_module, slow = train(config(tmp_path / "slow", shapes, minutes, **quiet), sleep=0.12)
    fast_plan, slow_plan = plan_of(fast), plan_of(slow)
    assert slow_plan.planned < 0.75 * fast_plan.planned  # four times the sleep, plus what a step costs
    assert slow_plan.step_seconds > 0.12
    for module, trainer, plan in ((fast_module, fast, fast_plan), (slow_module, slow, slow_plan)):
        # the run stops at its plan, and its cosine ends there; a loaded machine may let the clock
        # (the safety net) cut a 5-second run a few steps early (3% of 5 s is little margin), where
        # the rate is already near 0
        assert 0.95 * plan.planned <= trainer.global_step <= plan.planned
        assert len(module.rates) == trainer.global_step
        assert module.rates[-1] < 0.01 * max(module.rates)
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        assert scheduler.get_last_lr()[0] < 0.01 * max(module.rates)
        # what loss.edge_start reads: the share of the plan, not of max_steps (exactly: a plan of a few
        # dozen steps, as on a loaded machine, puts its integer half visibly off 0.5)
        assert run_share(scheduler, plan.planned) == pytest.approx(1.0)
        assert run_share(scheduler, plan.planned // 2) == pytest.approx((plan.planned // 2) / plan.planned)
        # within the budget, steps included
        assert plan.planned * plan.step_seconds < minutes * 60
    assert "time budget planned at step" in capsys.readouterr().out


def test_max_steps_still_bounds_a_planned_run(tmp_path, shapes):
    # The warm-up (10% of 60 s) ends by step 24 or so, slowed by the sleep; the plan it makes from
    # 0.25-s steps would fit about 230: max_steps is the bound, even on a machine 5x slower. (A 3-s
    # budget with fast steps made this test depend on the machine's load: a loaded CI planned 28.)
    cfg = config(tmp_path / "run", shapes, minutes=1.0, max_steps=30)
    module, trainer = train(cfg, sleep=0.25, sleep_until=25)
    assert trainer.global_step == 30 and plan_of(trainer).planned == 30
    assert module.rates[-1] < 0.01 * max(module.rates)


def test_a_run_that_reaches_max_steps_inside_its_warm_up_is_planned_there(tmp_path, shapes):
    # 30 fast steps end long before 10% of a 10-minute budget (the CI machine's fast moments made
    # the test above meet this case by chance: no plan was made at all)
    _, trainer = train(config(tmp_path / "run", shapes, minutes=10.0, max_steps=30), sleep=0.0)
    assert trainer.global_step == 30 and plan_of(trainer).planned == 30


def test_a_resumed_planned_run_keeps_its_plan_and_ends_with_the_same_weights(tmp_path, shapes):
    # Slow while the warm-up measures, fast after: the plan is made from slow steps, so the whole run
    # reaches its plan long before the clock (on a loaded machine the clock would otherwise cut it a
    # few steps short, and it would have fewer steps than its resumed twin).
    whole_module, whole = train(config(tmp_path / "whole", shapes, minutes=0.1), sleep=0.02, sleep_until=40)
    planned = plan_of(whole).planned
    checkpoint = tmp_path / "whole" / "toy" / "checkpoints" / "step00000040.ckpt"
    assert planned > 45 and checkpoint.is_file()
    assert whole.global_step == planned == len(whole_module.rates)
    # Resumed from step 40 with a larger budget: the plan is the checkpoint's, not made again.
    resumed_cfg = config(tmp_path / "resumed", shapes, minutes=1.0, ckpt_path=str(checkpoint))
    resumed_module, resumed = train(resumed_cfg, sleep=0.0)
    assert plan_of(resumed).planned == planned
    assert resumed.global_step == planned
    assert resumed_module.rates == pytest.approx(whole_module.rates[40:], rel=1e-9)
    for key, value in whole_module.state_dict().items():
        torch.testing.assert_close(resumed_module.state_dict()[key], value, rtol=1e-5, atol=1e-6)
