"""The experiment loggers a run writes to (`train.loggers`), all Lightning's own.

    tensorboard   RUN/<stage>/tensorboard/ (and the validation sample grids)
    csv           RUN/<stage>/csv/metrics.csv: always on, as the loss plot and a resumed run's
                  history read it
    wandb         Weights & Biases (`pip install wandb`): project $WANDB_PROJECT or "ldm", the run
                  named RUN/<stage>; WANDB_MODE=offline keeps it on disk under RUN/<stage>/wandb/.
                  A resumed run logs on into the same W&B run (its id is made from the stage folder)
    mlflow        MLflow (`pip install mlflow`): experiment $MLFLOW_EXPERIMENT_NAME or "ldm", to
                  $MLFLOW_TRACKING_URI, or else the SQLite database RUN/<stage>/mlflow.db (MLflow's
                  file store is in maintenance mode and refused unless MLFLOW_ALLOW_FILE_STORE=true)

W&B and MLflow are optional packages: asking for one that is not installed is refused in one line
before any model loads (`check_logger_packages`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from ldm.core.errors import LdmError
from ldm.stages.run_config import RunConfig

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # logger -> the package it needs
PROJECT = "ldm"
MLFLOW_DB = "mlflow.db"  # the W&B project and MLflow experiment, unless the environment names one


def check_logger_packages(loggers: list[str]) -> None:
    for name in loggers:
        package = PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            raise LdmError(f"train.loggers: {name} needs the {package} package, which is not installed "
                           f"(pip install {package}), or leave {name} out of train.loggers")


def run_name(cfg: RunConfig) -> str:
    """RUN/<stage> as the trackers show it: the run folder's name and the stage."""
    return f"{Path(cfg.run_dir).name}/{cfg.stage}"


def build_loggers(cfg: RunConfig) -> tuple[list[Logger], CSVLogger]:
    """The loggers of `train.loggers`, in its order, and the CSV one among them."""
    stage_dir = cfg.stage_dir
    check_logger_packages(cfg.train.loggers)
    csv_logger = CSVLogger(save_dir=str(stage_dir), name="", version="csv")
    made = {"csv": lambda: csv_logger,
            "tensorboard": lambda: TensorBoardLogger(save_dir=str(stage_dir), name="", version="tensorboard"),
            "wandb": lambda: wandb_logger(cfg),
            "mlflow": lambda: mlflow_logger(cfg)}
    return [made[name]() for name in cfg.train.loggers], csv_logger


def wandb_logger(cfg: RunConfig) -> WandbLogger:
    # A fixed id per stage folder: a resumed run (and only a run in this folder) continues the same
    # W&B run instead of starting a second one (Lightning's WandbLogger resumes with resume="allow").
    run_id = hashlib.sha256(str(cfg.stage_dir.resolve()).encode()).hexdigest()[:16]
    return WandbLogger(name=run_name(cfg), project=os.environ.get("WANDB_PROJECT", PROJECT),
                       save_dir=str(cfg.stage_dir), id=run_id)


def mlflow_logger(cfg: RunConfig) -> MLFlowLogger:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(cfg.stage_dir / MLFLOW_DB).resolve()}"
    return MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT), run_name=run_name(cfg),
                        tracking_uri=uri)


def close_loggers(loggers: list[Logger]) -> None:
    """End the W&B run (its data flushed, offline too), so that the next stage trained in the same
    process (the quickstart's) starts its own instead of logging into this one."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()
