"""Starting ldm in child processes as users do (`python -m ldm`, `accelerate launch`), importing the same
ldm as the tests: the parent's sys.path goes along (an installed ldm elsewhere is not picked up)."""

from __future__ import annotations

import os
import shutil
import socket
import sys
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
