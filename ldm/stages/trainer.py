"""What every training stage shares: the run config's common sections and the Lightning Trainer.

Each stage (autoencoder, clip, diffusion) builds its LightningModule and calls `fit`, which
  - seeds everything,
  - reads how many processes and which precision to use, from the config or from the
    torchrun-style environment that `accelerate launch` sets up,
  - checkpoints every N steps (Lightning writes each checkpoint through a temporary file, so a
    killed run never leaves a half-written one) and keeps the last K plus `last.ckpt`,
  - resumes from `last.ckpt` when asked, loading it with `weights_only=True`,
  - logs to TensorBoard and CSV, and draws the loss curves as a PNG at the end.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import field
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, recheck, to_dict
from ldm.core.errors import LdmError
from ldm.core.layout import METRICS_CSV
from ldm.data.config import DataConfig
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
from ldm.stages.plots import plot_losses, read_metric_rows
from ldm.stages.resume import ExactResume

# accelerate's --mixed_precision values, as Lightning precision settings.
ACCELERATE_PRECISION = {"no": "32-true", "fp16": "16-mixed", "bf16": "bf16-mixed"}
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed",
                     "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed", "32-true": "32-true",
                     "bf16-true": "bf16-true", "16-true": "16-true", "64-true": "64-true"}
LAST = "last"


@dataclasses.dataclass
class TrainedStage:
    """What every stage's `train(cfg)` returns, on every process."""

    export: Path  # the folder the next stage or the apps read (written by global rank 0)
    module: L.LightningModule  # as training left it (the EMA is not swapped in)
    trainer: L.Trainer


@dataclass(config=SECTION)
class TrainConfig:
    max_steps: int = 1000
    max_minutes: float | None = None  # stop after this much wall time, whatever max_steps says
    lr: float = 1e-4  # per process batch; not scaled with the number of processes
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    # Lightning precision ("32-true", "bf16-mixed", "16-mixed"); null takes accelerate's choice.
    precision: str | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp", "fsdp", ...: Lightning's strategies
    accumulate_grad_batches: int = 1
    gradient_clip: float | None = 1.0
    val_every_n_steps: int = 500
    limit_val_batches: int | None = None
    checkpoint_every_n_steps: int = 500
    keep_checkpoints: int = 2
    log_every_n_steps: int = 10
    seed: int = 0
    # Steps with a non-finite loss or gradients are skipped (and counted); this many in a row stop the run.
    max_bad_steps: int = 10
    # With --resume: config keys whose changes to apply from the resumed step on (see
    # ldm.stages.checkpoints.ACCEPTABLE_CHANGES); any other change is refused.
    accept_changes: list[str] = field(default_factory=list)
    # Lightning's deterministic=True: deterministic kernels only (some CUDA ones are not; on a CPU
    # runs are reproducible without it). Slower on GPUs; "warn" only warns where a kernel is not.
    deterministic: bool | Literal["warn"] = False
    # "last" resumes from the run's last checkpoint; a path resumes from that file.
    ckpt_path: str | None = None
    # Memory savers (autoencoder and diffusion stages; see ldm/stages/optimizers.py):
    # adamw8bit needs bitsandbytes; adafactor keeps factored second moments and no first moment.
    optimizer: Literal["adamw", "adamw8bit", "adafactor"] = "adamw"
    # Recompute each block's activations in the backward pass instead of keeping them: less memory
    # for about a third more compute (the UNet, the text encoder when trained, a KL autoencoder).
    gradient_checkpointing: bool = False

    def __post_init__(self):
        for name in ("max_steps", "val_every_n_steps", "checkpoint_every_n_steps",
                     "accumulate_grad_batches", "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.precision is not None and str(self.precision) not in PRECISION_ALIASES:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISION_ALIASES)}, "
                             f"got {self.precision!r}")


@dataclass(config=SECTION)
class RunConfig:
    """The sections every stage's config has; each stage adds its own (model, loss, ...)."""

    STAGE: ClassVar[str] = ""  # each stage's Config names its stage here

    stage: str
    run_dir: str  # RUN: every stage of one model writes its exports and logs here
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.STAGE and self.stage != self.STAGE:
            raise ValueError(f"stage must be '{self.STAGE}' for this config, got {self.stage!r}")

    @property
    def stage_dir(self) -> Path:
        """RUN/<stage>: checkpoints, logs, sample grids and loss plots of this stage."""
        return Path(self.run_dir) / self.stage

    @property
    def checkpoint_dir(self) -> Path:
        return self.stage_dir / "checkpoints"


# train.lr_schedule -> the name transformers' `get_scheduler` knows (each with linear warmup).
LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def lr_scheduler(optimizer, train: TrainConfig) -> dict:
    """Lightning's lr_scheduler entry for `train.lr_schedule`, with warmup, stepped every step."""
    from transformers import get_scheduler

    scheduler = get_scheduler(LR_SCHEDULES[train.lr_schedule], optimizer,
                              num_warmup_steps=train.warmup_steps, num_training_steps=train.max_steps)
    return {"scheduler": scheduler, "interval": "step"}


def resolve_precision(configured: str | None, env: dict | None = None) -> str:
    """The Lightning precision: the config's, else accelerate's, else full fp32.

    `accelerate launch` always sets ACCELERATE_MIXED_PRECISION, to "no" when it was not asked for
    anything, so "no" cannot tell "fp32 please" from "no opinion": it never overrides or conflicts
    with the config. fp16 or bf16 from accelerate that disagrees with the config is an error.
    """
    env = os.environ if env is None else env
    launched = env.get("ACCELERATE_MIXED_PRECISION")
    if launched is not None and launched not in ACCELERATE_PRECISION:
        raise LdmError(f"ACCELERATE_MIXED_PRECISION={launched!r} is not one of "
                       f"{', '.join(ACCELERATE_PRECISION)}")
    from_launcher = ACCELERATE_PRECISION[launched] if launched not in (None, "no") else None
    if configured is None:
        return from_launcher or "32-true"
    precision = PRECISION_ALIASES[str(configured)]
    if from_launcher is not None and from_launcher != precision:
        raise LdmError(
            f"train.precision={configured} conflicts with accelerate's mixed_precision={launched} "
            f"(ACCELERATE_MIXED_PRECISION); set one of them, or make them agree"
        )
    return precision


def resolve_processes(cfg: TrainConfig, env: dict | None = None) -> dict:
    """devices / num_nodes / strategy: from a torchrun-style launch when there is one."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world > 1 and "LOCAL_WORLD_SIZE" in env:
        local = int(env["LOCAL_WORLD_SIZE"])
        return {"devices": local, "num_nodes": world // local,
                "strategy": "ddp" if cfg.strategy == "auto" else cfg.strategy}
    return {"devices": cfg.devices, "num_nodes": cfg.num_nodes, "strategy": cfg.strategy}


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
    csv_logger = CSVLogger(save_dir=str(stage_dir), name="", version="csv")
    loggers = [TensorBoardLogger(save_dir=str(stage_dir), name="", version="tensorboard"), csv_logger]
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
    callbacks = [checkpoints, ExactResume(), NonFiniteGuard(train.max_bad_steps),
                 LearningRateMonitor(logging_interval="step"),
                 LossPlot(csv_logger, stage_dir / "loss.png", f"{cfg.stage} losses"),
                 RunRecord(comparable_config(cfg), data_fingerprint(cfg.data.source)),
                 *(callbacks or []), StopOnSignal(cfg.checkpoint_dir / f"{LAST}.ckpt")]
    manual = not module.automatic_optimization  # manual optimization clips in the module itself
    return L.Trainer(
        accelerator=train.accelerator,
        **resolve_processes(train),
        precision=resolve_precision(train.precision),
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
    with RunLock(cfg.stage_dir) if main_process() else nullcontext():
        if main_process():
            clean_stale_files(cfg.checkpoint_dir, Path(cfg.run_dir))
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
        yield


def comparable_config(cfg: RunConfig) -> dict:
    """The resolved config as checkpoints record it (where to resume from is not part of the run)."""
    config = to_dict(cfg)
    config["train"].pop("ckpt_path", None)
    config["train"].pop("accept_changes", None)
    return config


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
        import yaml

        cfg.stage_dir.mkdir(parents=True, exist_ok=True)
        (cfg.stage_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
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
    return trainer
