"""`train.loggers`: TensorBoard and CSV as before; Weights & Biases (offline) and MLflow when their
packages are installed (skipped otherwise); one clear line, before any model loads, when a logger's
package is missing. Through `ldm train` on a tiny pretrained pipeline (tests/test_finetune.py)."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from finetune_fixtures import base_fixture, shapes_fixture  # noqa: F401 (pytest fixtures base, shapes)
from test_finetune import finetune_config

from ldm.cli import main
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.stages.diffusion.config import Config


def train_with(tmp_path, base, shapes, loggers: list[str]):
    config = finetune_config(tmp_path / "run", base, shapes, train={"loggers": loggers})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["train", str(path)])
    return tmp_path / "run" / "diffusion"


def test_default_loggers_are_tensorboard_and_csv(tmp_path, base, shapes):
    cfg = build(Config, finetune_config(tmp_path, base, shapes))
    assert cfg.train.loggers == ["tensorboard", "csv"]


def test_wandb_logs_offline(tmp_path, base, shapes, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    stage = train_with(tmp_path, base, shapes, ["tensorboard", "csv", "wandb"])
    runs = list((stage / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logged = b"".join(path.read_bytes() for path in runs[0].glob("*.wandb"))
    assert b"train/loss" in logged and b"val/loss" in logged
    assert (stage / "csv" / "metrics.csv").is_file() and (stage / "tensorboard").is_dir()


def test_mlflow_logs_to_the_tracking_uri(tmp_path, base, shapes, monkeypatch):
    """To $MLFLOW_TRACKING_URI: a file store here (the default, SQLite, needs sqlalchemy, which
    mlflow-skinny lacks)."""
    pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    stage = train_with(tmp_path, base, shapes, ["csv", "mlflow"])
    logged = [str(path.relative_to(store)) for path in store.rglob("*") if path.is_file()]
    assert any("metrics/train/loss" in name for name in logged), logged
    assert not (stage / "tensorboard").exists()


@pytest.mark.parametrize("logger, package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_logger_whose_package_is_missing_is_refused_in_one_line(tmp_path, base, shapes, monkeypatch, capsys,
                                                                  logger, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(SystemExit) as stop:
        train_with(tmp_path, base, shapes, ["csv", logger])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert f"train.loggers: {logger} needs the {package} package" in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "diffusion" / "checkpoints").exists()  # before any training


@pytest.mark.parametrize("loggers, message", [
    (["tensorboard"], "train.loggers must include csv"),
    (["csv", "csv"], "train.loggers names a logger twice"),
    (["csv", "comet"], "train.loggers"),
])
def test_logger_mistakes_are_named(tmp_path, base, shapes, loggers, message):
    with pytest.raises(LdmError, match=message):
        build(Config, finetune_config(tmp_path, base, shapes, train={"loggers": loggers}))
