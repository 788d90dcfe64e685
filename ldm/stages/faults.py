"""What a long run meets and must survive: non-finite steps, a signal to stop, a second run in its folder.

    NonFiniteGuard   a step whose gradients are not finite (a NaN or inf loss makes them so) does not
                     update the weights; it is counted and logged, and after `train.max_bad_steps`
                     such steps in a row the run stops with an error naming them, before any of it
                     reaches a checkpoint or the export
    StopOnSignal     SIGTERM (a cluster's preemption) or SIGINT (Ctrl-C) saves a checkpoint at the
                     current step and stops the run; `--resume` continues exactly from there
    RunLock          one `ldm train` at a time in a stage's folder; a lock left by a dead process is
                     taken over

Lightning already notices SIGTERM (it stops after the current batch, without saving) and turns a
Ctrl-C into an immediate stop anywhere in a step; neither leaves a checkpoint of where the run was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ldm.core.atomic import read_json_mapping
from ldm.core.errors import LdmError

LOCK_NAME = "train.lock"


class RunStopped(LdmError):
    """The run was asked to stop by a signal and saved where it was; the CLI exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteGuard(Callback):
    """Skips optimizer steps with non-finite gradients; stops after `max_bad_steps` of them in a row.

    The check runs after backward and before the optimizer (Lightning's `on_before_optimizer_step`,
    which manual optimization goes through too). A skipped step clears the gradients, so the
    optimizer leaves every parameter and its moments alone. Under several processes the gradients
    were already averaged across them, so every process sees the same verdict.
    """

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.in_a_row = 0
        self.skipped = 0
        self.first_bad_step: int | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not gradients or torch.isfinite(torch.nn.utils.get_total_norm(gradients)):
            self.in_a_row, self.first_bad_step = 0, None
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped += 1
        self.in_a_row += 1
        if self.first_bad_step is None:
            self.first_bad_step = trainer.global_step
        pl_module.log("train/skipped_steps", float(self.skipped))
        if self.in_a_row > self.max_bad_steps:
            raise LdmError(
                f"training stopped: the loss or its gradients were not finite (NaN or inf) in {self.in_a_row} "
                f"optimizer steps in a row, from step {self.first_bad_step} to {trainer.global_step} "
                f"(train.max_bad_steps={self.max_bad_steps}); none of them changed the weights, and the last "
                "checkpoint and any earlier export are as they were. Lower train.lr, or check the data")
        warnings.warn(f"step {trainer.global_step}: non-finite loss or gradients, update skipped "
                      f"({self.in_a_row} in a row, {self.skipped} in all)", stacklevel=1)

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped = state_dict["skipped"]


class StopOnSignal(Callback):
    """On SIGTERM or SIGINT: finish the current step, save `checkpoint_path`, raise RunStopped.

    The checkpoint is saved where the periodic ones are (after a batch, once the exact-resume state
    has counted it), so a resumed run continues as if it had not stopped. A second Ctrl-C stops at
    once, without saving. Under several processes the decision to stop is shared, so they all save
    (a collective call) and stop at the same step.
    """

    def __init__(self, checkpoint_path: Path):
        self.checkpoint_path = checkpoint_path
        self.received: int | None = None
        self.previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        asked = self.received is not None or trainer.received_sigterm
        if not trainer.strategy.reduce_boolean_decision(asked, all=False):
            return
        trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
        name = signal.Signals(self.received or signal.SIGTERM).name
        raise RunStopped(f"stopped by {name} at step {trainer.global_step}: saved {self.checkpoint_path}; "
                         "rerun with --resume to continue", exit_code=128 + (self.received or signal.SIGTERM))


class RunLock:
    """A lock file in a stage's folder, held for the length of a run by its main process.

    It names the process that holds it (pid, host, start time). A lock whose process is gone (same
    host, no such pid) is taken over with a warning; one held by a live process, or by another host
    (which cannot be checked from here), refuses the second run.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        while True:
            try:
                with open(self.path, "x") as f:  # "x": fails if it exists, atomically
                    json.dump(record, f)
                self.held = True
                return self
            except FileExistsError:
                self._take_over_if_dead()

    def _take_over_if_dead(self) -> None:
        holder = read_json_mapping(self.path)  # {} when half-written by a process that died writing it
        pid, host = holder.get("pid"), holder.get("host")
        if host not in (None, socket.gethostname()):
            raise LdmError(f"{self.path.parent} is busy: another ldm train (pid {pid} on {host}, started "
                           f"{holder.get('started')}) holds {self.path}; wait for it, or delete the file if "
                           "that run is gone")
        if pid is not None and process_alive(pid):
            raise LdmError(f"{self.path.parent} is busy: another ldm train (pid {pid}, started "
                           f"{holder.get('started')}) is training there; wait for it or choose another run_dir")
        warnings.warn(f"taking over {self.path}, left by a process that no longer runs (pid {pid})", stacklevel=3)
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def main_process(trainer: L.Trainer | None = None) -> bool:
    """Whether this is the run's main process (global rank 0), before or after the Trainer exists."""
    if trainer is not None:
        return trainer.is_global_zero
    return int(os.environ.get("RANK", "0")) == 0
