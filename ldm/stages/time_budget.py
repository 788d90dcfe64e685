"""Training planned to a time budget (`train.max_minutes`), and the learning-rate schedules it lays out.

A run given minutes instead of steps must mean the same on a slow and a fast machine. Stopping a run
when the clock runs out (Lightning's `max_time`) does not: a cosine schedule cut there ends at a high
learning rate, wherever the machine's speed put the cut. So the budget plans the run:

  1. the first steps run with the schedule laid out over `train.max_steps`;
  2. after a warm-up (`WARMUP_SHARE` of the budget, and at least `MIN_MEASURED` steps after the
     `SKIPPED` first ones, which pay for allocation and caches), the step time measured over the
     warm-up's second half (the first is slowed by whatever starts beside the run) says how
     many steps fit in the time left, with the validations to come counted at a training step's
     time a batch (`VAL_BATCH_COST`) and `MARGIN` of it kept for what comes after the last step;
  3. the schedule is laid out to end at that step (warmup, then cosine or linear decay to zero, or
     a constant rate) and the Trainer stops there; `max_steps` stays the other bound, the smaller wins.

The plan is made once. Replanning later from the clock would make a run's schedule depend on when
it was interrupted, and exact resume would no longer hold; the margin covers what the warm-up did
not see (checkpoints, a validation dearer than estimated), and a run the machine slowed down after planning is still
stopped by Lightning's Timer (which `max_time` adds and a checkpoint carries), late in its
schedule where the rate is near zero. The plan (step time, planned steps, where the schedule ends)
is printed, logged as `plan/*`, and kept in the checkpoints with the schedule itself: a resumed run
keeps it, so it takes the same steps at the same rates as a run that never stopped.

None of the libraries plans a schedule to a clock (transformers' schedules fix their length when
they are built; Lightning's Timer only stops): this is ours.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback, Timer
from torch.optim.lr_scheduler import LambdaLR

# of the budget, measured before planning: at 5% the quickstart's stage-1 lanes measured their
# steps while the other lane was still starting, planned 1193 steps of 0.19 s, then ran at 0.13 s and
# ended 70 s early (docs/benchmarks.md, session 12); the second half of 10% is past that.
WARMUP_SHARE = 0.10
SKIPPED = 3  # first steps left out of the measurement
MIN_MEASURED = 10  # steps measured at least
MARGIN = 0.03  # of the budget, kept for checkpoints and the final save
VAL_BATCH_COST = 1.0  # a validation batch, in training steps: forward only, but metrics and sample grids


class PlannedSchedule:
    """The learning-rate factor at each step: linear warmup over `warmup_steps`, then `kind`
    ("constant", "cosine" or "linear" decay to zero at `total_steps`).

    The same curves as transformers' `get_scheduler`, with the length a field that the time
    budget can set after the run has started; torch's LambdaLR checkpoints the fields of a
    callable object, so a resumed run gets the plan back with the scheduler."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        self.kind, self.warmup_steps, self.total_steps = kind, warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def planned_lr_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, PlannedSchedule(kind, warmup_steps, total_steps))


def run_share(scheduler: LambdaLR, step: int) -> float:
    """How far through its run `step` is (1 at the end): the planned steps once the time budget has
    planned, else max_steps. Read from the schedule, which the plan lays out to end there."""
    return step / max(1, scheduler.lr_lambdas[0].total_steps)


class TimeBudget(Callback):
    """Plans the run to `minutes` of training (Lightning's Timer is the clock); see the module doc.

    Steps here are batches: a module that steps several optimizers per batch (a GAN) says how many
    (`per_batch`), and the Trainer's step bound is scaled by it as `build_trainer` scales max_steps."""

    def __init__(self, minutes: float, max_steps: int, per_batch: int = 1, name: str = "train"):
        self.budget = minutes * 60.0
        self.max_steps, self.per_batch, self.name = max_steps, per_batch, name
        self.planned: int | None = None  # the step the schedule ends at and the run stops at
        self.step_seconds: float | None = None  # as measured when the plan was (re)made
        self._marks: list[tuple[int, float]] = []  # (step, Timer elapsed) at each measured step

    # ---- the clock and the count ------------------------------------------------------------------

    def elapsed(self, trainer) -> float:
        """Training seconds so far, a resumed run's included: the Timer that `max_time` adds (the
        Trainer gets max_time whenever it gets this callback, build_trainer)."""
        timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
        return timer.time_elapsed("train")

    def steps_done(self, trainer) -> int:
        return trainer.global_step // self.per_batch

    # ---- hooks --------------------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module) -> None:
        if self.planned is not None:  # restored from a checkpoint: keep it
            self._apply(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.planned is not None:
            return
        done, elapsed = self.steps_done(trainer), self.elapsed(trainer)
        if done < SKIPPED:
            return
        self._marks.append((done, elapsed))
        measured = done - self._marks[0][0]
        # a run so fast that it reaches max_steps inside the warm-up is planned there (at max_steps)
        ready = done >= self.max_steps or (measured >= MIN_MEASURED and elapsed >= WARMUP_SHARE * self.budget)
        # Every process must stop at the same step: the main process decides, the others follow.
        if trainer.strategy.broadcast(ready, src=0):
            # the step time of the warm-up's second half: the first is slowed by what starts beside
            # the run (the quickstart's other stage loading, data caches filling)
            since, then = self._marks[len(self._marks) // 2]
            self._plan(trainer, done, elapsed, (elapsed - then) / max(1, done - since))

    def state_dict(self) -> dict:
        return {"planned": self.planned, "step_seconds": self.step_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.planned, self.step_seconds = state_dict["planned"], state_dict["step_seconds"]

    # ---- the plan -----------------------------------------------------------------------------------

    def _plan(self, trainer, done: int, elapsed: float, step_seconds: float) -> None:
        left = self.budget * (1.0 - MARGIN) - elapsed
        # each training step also carries its share of the validations to come
        per_step = step_seconds * (1.0 + VAL_BATCH_COST * validation_share(trainer))
        fits = done + max(1, int(left / per_step)) if per_step > 0 else self.max_steps
        self.planned = trainer.strategy.broadcast(min(self.max_steps, fits), src=0)
        self.step_seconds = trainer.strategy.broadcast(step_seconds, src=0)
        self._apply(trainer)
        if trainer.is_global_zero:
            self._report(trainer, done)

    def _apply(self, trainer) -> None:
        """Lay every schedule out to end at the planned step, and stop the Trainer there."""
        for config in trainer.lr_scheduler_configs:
            for factor in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(factor, PlannedSchedule):
                    factor.total_steps = self.planned
        trainer.fit_loop.epoch_loop.max_steps = self.planned * self.per_batch

    def _report(self, trainer, done: int) -> None:
        bound = "max_steps" if self.planned == self.max_steps else f"{self.budget / 60:g} min"
        print(f"[{self.name}] time budget planned at step {done}: {self.step_seconds:.3f} s a step measured, "
              f"{self.planned} steps fit ({bound} bound; max_steps {self.max_steps}); the learning-rate "
              f"schedule ends at step {self.planned}", flush=True)
        for logger in trainer.loggers:
            logger.log_metrics({"plan/steps": float(self.planned), "plan/step_seconds": self.step_seconds},
                               step=trainer.global_step)


def validation_share(trainer) -> float:
    """Validation batches to come per training step: a validation's batches over its interval."""
    every = getattr(trainer, "val_check_batch", None)  # steps between validations, when counted in steps
    if not isinstance(every, int) or every < 1:
        return 0.0
    return validation_batches(trainer) / every


def validation_batches(trainer) -> int:
    """Batches a validation runs: the validation loader's length, cut at `limit_val_batches`."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not trainer.enable_validation:
        return 0
    try:
        batches = len(datamodule.val_dataloader())
    except TypeError:  # a stream has no length: count it at the limit
        batches = None
    limit = trainer.limit_val_batches
    if isinstance(limit, int):
        return limit if batches is None else min(batches, limit)
    return 0 if batches is None else int(batches * limit)
