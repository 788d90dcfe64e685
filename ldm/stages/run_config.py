"""The sections every stage's config has: where the run goes, its data (`data:`) and how it trains (`train:`).

Each stage's Config (ldm/stages/<stage>/config.py) extends RunConfig with its own sections.
"""

from __future__ import annotations

import json
from dataclasses import field
from pathlib import Path
from typing import ClassVar, Literal

from pydantic.dataclasses import dataclass

from ldm.core.config import SECTION, Count, NonNegative, NonNegativeInt, Positive, to_dict
from ldm.core.layout import CHECKPOINTS
from ldm.data.config import DataConfig

# accelerate's --mixed_precision values, as Lightning precision settings.
ACCELERATE_PRECISION = {"no": "32-true", "fp16": "16-mixed", "bf16": "bf16-mixed"}
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed",
                     "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed", "32-true": "32-true",
                     "bf16-true": "bf16-true", "16-true": "16-true", "64-true": "64-true",
                     "auto": "auto"}  # "auto": bf16-mixed where the hardware does bf16 natively, else fp32
LAST = "last"
LoggerName = Literal["tensorboard", "csv", "wandb", "mlflow"]
# The train: settings that say how to resume (from where, accepting which changes), not what the run is.
RESUME_SETTINGS = ("ckpt_path", "accept_changes")


@dataclass(config=SECTION)
class TrainConfig:
    max_steps: Count = 1000
    # A time budget for the run: after a short measured warm-up, the steps that fit in it (at most
    # max_steps) are planned and the learning-rate schedule is laid out to end with them.
    max_minutes: Positive | None = None
    lr: Positive = 1e-4  # per process batch; not scaled with the number of processes
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: NonNegativeInt = 0
    weight_decay: NonNegative = 0.0
    # Lightning precision ("32-true", "bf16-mixed", "16-mixed"), or "auto": bf16-mixed on a GPU or CPU
    # that computes bf16 natively, 32-true elsewhere; null takes accelerate's choice.
    precision: str | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: Count = 1
    strategy: str = "auto"  # "ddp", "fsdp", ...: Lightning's strategies
    accumulate_grad_batches: Count = 1
    gradient_clip: Positive | None = 1.0
    val_every_n_steps: Count = 500
    limit_val_batches: Count | None = None
    checkpoint_every_n_steps: Count = 500
    keep_checkpoints: int = 2
    log_every_n_steps: Count = 10
    seed: NonNegativeInt = 0
    # Steps with a non-finite loss or gradients are skipped (and counted); this many in a row stop the run.
    max_bad_steps: NonNegativeInt = 10
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
    # Where metrics go (ldm/stages/loggers.py): TensorBoard, CSV (always: the loss plot reads it),
    # Weights & Biases and MLflow (each needs its package installed).
    loggers: list[LoggerName] = field(default_factory=lambda: ["tensorboard", "csv"])

    def __post_init__(self):
        if "csv" not in self.loggers:
            raise ValueError("train.loggers must include csv: the loss plot and a resumed run's history read it")
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError(f"train.loggers names a logger twice: {self.loggers}")
        if self.max_steps <= self.warmup_steps:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} must be below train.max_steps={self.max_steps} "
                             "(the run would end before its learning rate reached train.lr)")
        if self.precision is not None and str(self.precision) not in PRECISION_ALIASES:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISION_ALIASES)}, "
                             f"got {self.precision!r}")


@dataclass(config=SECTION)
class RunConfig:
    """The sections every stage's config has; each stage adds its own (model, loss, ...)."""

    STAGE: ClassVar[str] = ""  # each stage's Config names its stage here
    MASKED_LOSS: ClassVar[bool] = False  # whether the stage's loss reads data.mask (the diffusion stage's)
    PRIOR_PRESERVATION: ClassVar[bool] = False  # whether the stage reads data.prior_preservation (diffusion)

    stage: str
    run_dir: str  # RUN: every stage of one model writes its exports and logs here
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.STAGE and self.stage != self.STAGE:
            raise ValueError(f"stage must be '{self.STAGE}' for this config, got {self.stage!r}")
        if self.data.mask != "none" and not self.MASKED_LOSS:
            # refused rather than ignored: a user who sets a mask expects it to change what trains
            raise ValueError(f"data.mask weighs the diffusion stage's loss only; the {self.stage} stage trains "
                             "on whole images: leave data.mask out of its config")
        if self.data.prior_preservation is not None and not self.PRIOR_PRESERVATION:
            raise ValueError(f"data.prior_preservation is for the diffusion stage (fine-tuning a pretrained "
                             f"pipeline), not the {self.stage} stage: leave it out of its config")

    @property
    def stage_dir(self) -> Path:
        """RUN/<stage>: checkpoints, logs, sample grids and loss plots of this stage."""
        return Path(self.run_dir) / self.stage

    @property
    def checkpoint_dir(self) -> Path:
        return self.stage_dir / CHECKPOINTS


def comparable_config(config: RunConfig | dict) -> dict:
    """What a run is, for comparing it with another: the resolved config (or its saved form,
    RUN/<stage>/config.yaml) as plain data (tuples as the lists YAML and JSON make of them), without
    RESUME_SETTINGS. Checkpoints record it; a resumed run and the quickstart compare with it."""
    plain = json.loads(json.dumps(config if isinstance(config, dict) else to_dict(config)))
    for key in RESUME_SETTINGS:
        plain["train"].pop(key, None)
    return plain


