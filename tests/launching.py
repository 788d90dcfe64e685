"""Starting ldm in child processes as users do (`python -m ldm`, `accelerate launch`), importing the same
ldm as the tests: the parent's sys.path goes along (an installed ldm elsewhere is not picked up)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one's, its sys.path, one thread (runs compare bits)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path),
            "OMP_NUM_THREADS": "1", **extra}


def accelerate() -> str | None:
    """accelerate's launcher: on PATH, or beside this Python (a virtual environment not activated)."""
    beside = Path(sys.executable).parent / "accelerate"
    return shutil.which("accelerate") or (str(beside) if beside.is_file() else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ldm_train(config: Path, *extra: str) -> subprocess.Popen:
    """`python -m ldm train CONFIG ...` in a child process, its output kept for the assertion message."""
    return subprocess.Popen([sys.executable, "-m", "ldm", "train", str(config), *extra], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after_first_checkpoint(run: subprocess.Popen, checkpoints: Path, within_s: float) -> bool:
    """SIGKILL `run` at a random moment up to `within_s` after its first step checkpoint appears;
    False when it finished before it could be killed (a very fast machine)."""
    while not list(checkpoints.glob("step*.ckpt")) and run.poll() is None:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, within_s))
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    return run.returncode != 0
