"""Checkpoints that are whole, readable and of the same run: how they are written, chosen and checked.

- `AtomicCheckpointIO` writes each checkpoint to a temporary file in its own folder, flushes it to
  disk and renames it into place. (Lightning's writer goes through fsspec, which stages the file
  elsewhere and moves it: across file systems that is a copy, and a kill during it leaves a
  truncated `last.ckpt` where the good one was.)
- `resume_checkpoint` picks what `--resume` continues from: `last.ckpt`, or when that cannot be
  read, the newest step checkpoint that can, with a warning.
- `RunRecord` stores in every checkpoint what the run was: its resolved config, a fingerprint of its
  data and its number of processes; `check_resume` compares them with the run being started and
  refuses changes that would make the resumed run something else, naming the keys.
- `clean_stale_files` removes what killed processes left half-written (temporary checkpoints and
  export folders).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from ldm.core.atomic import atomic_file
from ldm.core.errors import LdmError
from ldm.data.sources.shards import shard_files
from ldm.stages.faults import process_alive

RECORD_KEY = "ldm_run"  # where RunRecord puts its record in a checkpoint
# Config keys a resumed run may change freely: they decide when training stops, where and what it
# writes along the way, not what it trains on or how (the data's own fingerprint guards its content,
# so a data folder that moved is the same data).
SAFE_TO_CHANGE = ("run_dir", "data.source", "data.num_workers", "train.max_steps", "train.max_minutes",
                  "train.val_every_n_steps", "train.limit_val_batches", "train.checkpoint_every_n_steps",
                  "train.keep_checkpoints", "train.log_every_n_steps", "train.loggers", "train.max_bad_steps",
                  "train.ckpt_path",
                  "cache_shared_filesystem")
# Keys a resumed run may change when the user says so (`--accept-changes KEY`), because the trainer
# can make the change take effect from the resumed step on.
ACCEPTABLE_CHANGES = ("train.lr", "train.gradient_clip")
_TEMPORARY = re.compile(r"^\..+\.(tmp|old)-(\d+)(\..*)?$")  # what atomic writes name their scratch files


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_file(path) as tmp:
            torch.save(checkpoint, tmp)


def read_checkpoint(path: Path) -> dict | None:
    """The checkpoint's contents (memory-mapped, so cheap), or None when it cannot be read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a truncated or corrupt file raises anything from EOFError to RuntimeError
        return None


def resume_checkpoint(folder: Path, last: Path) -> Path | None:
    """`last`, or else the newest readable step checkpoint in `folder` (with a warning), or None."""
    candidates = [last] + sorted(folder.glob("step*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if path.is_file() and read_checkpoint(path) is not None:
            if path != last:
                warnings.warn(f"{last} cannot be read (a truncated or corrupt file): resuming from {path}, "
                              "the newest checkpoint that can", stacklevel=2)
            return path
    return None


def data_fingerprint(source: str | list[str]) -> str:
    """What the data is, cheaply: every file's name and size for a local folder or local shards (not
    where they are nor their modification times, so a copied folder is the same data); the name for a
    hub dataset or shards named by URL (whose revision is their host's business)."""
    files = shard_files(source)
    digest = hashlib.sha256()
    if files is not None:
        for file in files:
            local = Path(file)
            name = f"{local.name}\0{local.stat().st_size}" if local.is_file() else file
            digest.update(f"{name}\n".encode())
        return digest.hexdigest()[:16]
    path = Path(source).expanduser()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\n".encode())
    else:
        digest.update(source.encode())
    return digest.hexdigest()[:16]


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: one entry per key, as overrides name them."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class RunRecord(Callback):
    """Puts the run's resolved config, data fingerprint and process count into every checkpoint."""

    def __init__(self, config: dict, data: str):
        self.record = {"config": config, "data": data}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[RECORD_KEY] = {**self.record, "processes": trainer.world_size}


def check_resume(saved: dict | None, config: dict, data: str, processes: int,
                 accepted: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """The accepted changes {key: (old, new)}; LdmError for any other change that matters.

    `saved` is the checkpoint's record (RunRecord's); None, a checkpoint without one, is refused.
    """
    if saved is None:
        raise LdmError("--resume: the checkpoint holds no run record (it was not written by `ldm train`, or "
                       "cannot be read whole), so nothing says it is this run; start a new run_dir")
    before, now = flatten(saved["config"]), flatten(config)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k) and k not in SAFE_TO_CHANGE)
    refused = [k for k in changed if k not in accepted]
    if refused:
        listing = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in refused)
        acceptable = [k for k in refused if k in ACCEPTABLE_CHANGES]
        hint = (f"; to apply {', '.join(acceptable)} from the resumed step on, pass --accept-changes "
                f"{' '.join(acceptable)}" if acceptable else "")
        raise LdmError(f"--resume with a changed config ({listing}): the checkpoint was trained with the old "
                       f"values{hint}; other keys cannot change mid-run (start a new run_dir)")
    unsupported = [k for k in accepted if k in changed and k not in ACCEPTABLE_CHANGES]
    if unsupported:
        raise LdmError(f"--accept-changes {' '.join(unsupported)}: can only apply {', '.join(ACCEPTABLE_CHANGES)} "
                       "to a resumed run")
    if saved.get("data") != data:
        raise LdmError("--resume: the data changed since the checkpoint (files added, removed or modified): "
                       "the resumed run would not see what it saw; start a new run_dir")
    if saved["processes"] != processes:
        raise LdmError(f"--resume with {processes} process(es), but the checkpoint was trained with "
                       f"{saved['processes']}: the data order and position are per process; resume with the same "
                       "number of processes")
    return {k: (before.get(k), now.get(k)) for k in changed}


class ApplyAcceptedChanges(Callback):
    """Makes `--accept-changes train.lr` take effect once the checkpoint's optimizer is restored:
    every parameter group that followed the old rate follows the new one, schedule included."""

    def __init__(self, changes: dict[str, tuple[Any, Any]]):
        self.changes = changes

    def on_train_start(self, trainer, pl_module) -> None:
        if "train.lr" not in self.changes:
            return  # train.gradient_clip takes effect by itself: the Trainer reads it every step
        old, new = self.changes["train.lr"]
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for i, group in enumerate(scheduler.optimizer.param_groups):
                if abs(group.get("initial_lr", group["lr"]) - old) <= 1e-12 * max(abs(old), 1.0):
                    factor = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
                    group["initial_lr"], group["lr"] = new, new * factor
                    scheduler.base_lrs[i] = new


def clean_stale_files(*folders: Path) -> list[Path]:
    """Remove temporary files and folders left by processes that no longer run; returns them."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _TEMPORARY.match(path.name)
            if match and not process_alive(int(match.group(2))):
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path)
    return removed
