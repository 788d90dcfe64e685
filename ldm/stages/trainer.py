"""What every training stage shares: the frame it trains in, and the Lightning Trainer.

Each stage's `train` (ldm/stages/<stage>/train.py) does, in `with begin(cfg):`, build its module and
datamodule, `fit`, and export; `begin` checks the config, takes the stage folder's lock and seeds
everything before the model is built. `fit`:
  - builds the Trainer with the processes and precision of the config or the launcher (launch.py),
  - checkpoints every N steps, each written whole (checkpoints.py), keeping the last K plus last.ckpt,
  - guards against non-finite steps and saves on SIGTERM or Ctrl-C (faults.py),
  - with `train.max_minutes`, plans the run to that budget: the steps that fit, and the learning-rate
    schedule laid out to end with them (time_budget.py),
  - resumes exactly from last.ckpt when asked (resume.py), refusing a config that changed mid-run,
  - logs to `train.loggers` (TensorBoard and CSV by default; W&B, MLflow: loggers.py), the CSV
    history kept across resumes, and draws the loss curves.
"""

from __future__ import annotations

import dataclasses
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ldm.core.config import recheck, to_dict
from ldm.core.errors import LdmError
from ldm.core.layout import LOSS_PLOT, METRICS_CSV, STAGE_CONFIG
from ldm.stages.checkpoints import (
    RECORD_KEY,
    ApplyAcceptedChanges,
    AtomicCheckpointIO,
    RunRecord,
    check_resume,
    clean_stale_files,
    data_fingerprint,
    read_checkpoint,
    resume_checkpoint,
)
from ldm.stages.faults import NonFiniteGuard, RunLock, StopOnSignal, main_process
from ldm.stages.launch import resolve_precision, resolve_processes
from ldm.stages.loggers import build_loggers, check_logger_packages, close_loggers
from ldm.stages.plots import plot_losses, read_metric_rows
from ldm.stages.resume import ExactResume
from ldm.stages.run_config import LAST, RunConfig, TrainConfig, comparable_config
from ldm.stages.time_budget import TimeBudget, planned_lr_scheduler


@dataclasses.dataclass
class TrainedStage:
    """What every stage's `train(cfg)` returns, on every process."""

    export: Path  # the folder the next stage or the apps read (written by global rank 0)
    module: L.LightningModule  # as training left it (the EMA is not swapped in)
    trainer: L.Trainer


def lr_scheduler(optimizer, train: TrainConfig) -> dict:
    """Lightning's lr_scheduler entry for `train.lr_schedule`, with warmup, stepped every step. Laid
    out over max_steps; with `train.max_minutes`, TimeBudget lays it out again over the steps that
    fit (ldm/stages/time_budget.py)."""
    scheduler = planned_lr_scheduler(optimizer, train.lr_schedule, train.warmup_steps, train.max_steps)
    return {"scheduler": scheduler, "interval": "step"}


def resolve_checkpoint(cfg: RunConfig) -> str | None:
    """The checkpoint to resume from, or None for a fresh run (which must not overwrite one)."""
    last = cfg.checkpoint_dir / f"{LAST}.ckpt"
    wanted = cfg.train.ckpt_path
    if wanted == LAST:
        readable = resume_checkpoint(cfg.checkpoint_dir, last)
        if readable is not None:
            return str(readable)
        if last.exists() or list(cfg.checkpoint_dir.glob("step*.ckpt")):
            raise LdmError(f"no checkpoint in {cfg.checkpoint_dir} can be read (truncated or corrupt files): "
                           "nothing to resume from; start a new run_dir")
        warnings.warn(f"nothing to resume in {cfg.checkpoint_dir}: starting a fresh run", stacklevel=2)
        return None
    if wanted is not None:
        if not Path(wanted).is_file():
            raise LdmError(f"train.ckpt_path: checkpoint not found: {wanted}")
        return wanted
    if last.exists():
        raise LdmError(f"{cfg.checkpoint_dir} already holds a run: pass --resume to continue it, "
                       "or choose another run_dir")
    return None


class LossPlot(Callback):
    """Draws RUN/<stage>/loss.png from the CSV log when training ends."""

    def __init__(self, csv_logger: CSVLogger, out_png: Path, title: str):
        self.csv_logger, self.out_png, self.title = csv_logger, out_png, title

    def on_train_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.csv_logger.save()
        metrics = Path(self.csv_logger.log_dir) / "metrics.csv"
        if metrics.exists():
            plot_losses(metrics, self.out_png, self.title)


def build_trainer(cfg: RunConfig, module: L.LightningModule, callbacks: list | None = None) -> L.Trainer:
    """The Trainer for `cfg`, with the callbacks every stage has: checkpoints (written whole), exact
    resume, the non-finite guard, learning-rate logging, the loss plot, and the signal stop last (it
    saves once every other callback has done its work for the step)."""
    train = cfg.train
    stage_dir = cfg.stage_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    # Lightning's global_step counts optimizer steps; a module that steps several optimizers per
    # batch (a GAN: generator and discriminator) says how many, and max_steps and the checkpoint
    # interval, which the config counts in batches, are scaled to match.
    per_batch = getattr(module, "optimizer_steps_per_batch", 1)
    loggers, csv_logger = build_loggers(cfg)
    checkpoints = ModelCheckpoint(
        dirpath=str(cfg.checkpoint_dir),
        filename="step{step:08d}",
        auto_insert_metric_name=False,
        every_n_train_steps=train.checkpoint_every_n_steps * per_batch,
        save_top_k=train.keep_checkpoints,
        monitor="step",
        mode="max",
        save_last=True,
    )
    if train.max_minutes:
        callbacks = [TimeBudget(train.max_minutes, train.max_steps, per_batch, cfg.stage), *(callbacks or [])]
    callbacks = [checkpoints, ExactResume(), NonFiniteGuard(train.max_bad_steps),
                 LearningRateMonitor(logging_interval="step"),
                 LossPlot(csv_logger, stage_dir / LOSS_PLOT, f"{cfg.stage} losses"),
                 RunRecord(comparable_config(cfg), data_fingerprint(cfg.data.source)),
                 *(callbacks or []), StopOnSignal(cfg.checkpoint_dir / f"{LAST}.ckpt")]
    manual = not module.automatic_optimization  # manual optimization clips in the module itself
    return L.Trainer(
        accelerator=train.accelerator,
        **resolve_processes(train),
        precision=resolve_precision(train.precision, accelerator=train.accelerator),
        max_steps=train.max_steps * per_batch,
        max_time={"minutes": train.max_minutes} if train.max_minutes else None,
        val_check_interval=train.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=train.limit_val_batches,
        num_sanity_val_steps=0,
        accumulate_grad_batches=1 if manual else train.accumulate_grad_batches,
        gradient_clip_val=None if manual else train.gradient_clip,
        log_every_n_steps=train.log_every_n_steps,
        deterministic=train.deterministic,
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=str(stage_dir),
        enable_model_summary=False,
        # the datamodule shards training data itself (ResumableShuffleSampler) and validation data
        use_distributed_sampler=False,
        plugins=[AtomicCheckpointIO()],
    )


def describe_batch(cfg: RunConfig, trainer: L.Trainer) -> dict:
    """How big a step is: data.batch_size is per process; the learning rate is not rescaled."""
    per_process = cfg.data.batch_size
    accumulation = cfg.train.accumulate_grad_batches
    return {"batch_per_process": per_process, "processes": trainer.world_size,
            "accumulate_grad_batches": accumulation,
            "global_batch": per_process * trainer.world_size * accumulation, "lr": cfg.train.lr}


@contextmanager
def begin(cfg: RunConfig):
    """The frame of every stage's `train`, entered before anything random happens (building the model,
    learning a tokenizer, splitting the data):

    - the config is checked again (code may have changed it since it was loaded);
    - the main process takes the stage folder's lock (one run at a time there) and removes what
      killed runs left half-written;
    - every generator is seeded from `train.seed`: the same config on the same machine and thread
      count gives the same weights, and every process starts from the same initial weights.
    The lock is held until the export is written, and released however the block ends.
    """
    recheck(cfg)
    check_logger_packages(cfg.train.loggers)  # before any model loads
    with RunLock(cfg.stage_dir) if main_process() else nullcontext():
        if main_process():
            clean_stale_files(cfg.checkpoint_dir, Path(cfg.run_dir))
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        yield


def keep_metrics_history(trainer: L.Trainer, csv_path: Path, up_to_step: int) -> None:
    """A resumed run's CSV log starts with the rows the run logged up to its checkpoint (Lightning's
    CSV logger empties metrics.csv when it starts in a folder that has one), so the loss plot and
    the report show the whole run. Rows logged after the checkpoint, which the resumed run logs
    again, are dropped."""
    if not csv_path.is_file() or not trainer.is_global_zero:
        return
    rows = read_metric_rows(csv_path, up_to_step)
    csv_logger = next(logger for logger in trainer.loggers if isinstance(logger, CSVLogger))
    for step, values in rows:
        csv_logger.log_metrics(values, step)


def fit(cfg: RunConfig, module: L.LightningModule, datamodule: L.LightningDataModule,
        callbacks: list | None = None) -> L.Trainer:
    """Train `module` on `datamodule` as `cfg.train` says, resuming when asked.

    Each process draws its own training noise from the seed and its rank (still reproducible); a
    resumed run is checked against the run its checkpoint holds first.
    """
    ckpt_path = resolve_checkpoint(cfg)
    accepted = {}
    trainer = build_trainer(cfg, module, callbacks)
    if ckpt_path is not None:
        record = read_checkpoint(Path(ckpt_path)) or {}
        accepted = check_resume(record.get(RECORD_KEY), comparable_config(cfg), data_fingerprint(cfg.data.source),
                                trainer.world_size, tuple(cfg.train.accept_changes))
        if accepted:
            trainer.callbacks.append(ApplyAcceptedChanges(accepted))
        keep_metrics_history(trainer, cfg.stage_dir / METRICS_CSV, record.get("global_step", 0))
    L.seed_everything(cfg.train.seed + trainer.global_rank, workers=True, verbose=False)
    batch = describe_batch(cfg, trainer)
    if trainer.is_global_zero:
        cfg.stage_dir.mkdir(parents=True, exist_ok=True)
        (cfg.stage_dir / STAGE_CONFIG).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        print(f"[{cfg.stage}] batch {batch['batch_per_process']} per process x {batch['processes']} "
              f"process(es) x {batch['accumulate_grad_batches']} accumulation = {batch['global_batch']} "
              f"images per step; lr {batch['lr']:g} (not scaled by the batch)")
    for logger in trainer.loggers:
        logger.log_hyperparams({"batch/" + key: value for key, value in batch.items()})
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    # A final checkpoint, so a run stopped by max_steps or max_minutes can always be resumed
    # (a collective call: every process takes part). The whole training state, not the weights
    # alone: resuming needs the optimizer and the data position too.
    trainer.save_checkpoint(cfg.checkpoint_dir / f"{LAST}.ckpt", weights_only=False)
    close_loggers(trainer.loggers)
    return trainer
