"""Writing folders and files whole or not at all.

An export (RUN/vae, RUN/pipeline, ...) is written into a hidden temporary folder beside its target
and renamed into place only when complete, so a crash mid-export leaves the previous export intact
and never a half-written one. Files (a latent cache's shards, small records) go the same way: a
temporary name beside the target, flushed to disk, then one rename. `read_json_mapping` reads a
small JSON file back leniently: a missing, unreadable or half-written one (a writer killed before
these existed, or another tool's) counts as empty.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(target: str | Path):
    """Yield a temporary folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(target: str | Path, suffix: str = ""):
    """Yield a temporary path beside `target` for the caller to write; on success it is flushed to
    disk and renamed to `target`, on error it is removed. The temporary name ends in a random
    token after the process id: processes of several machines may write one file into a shared
    folder (a latent cache's parts.json), and two machines can run processes of the same id.
    `suffix` ends the temporary name, for writers that pick the format by extension (".mp4")."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temporary name and rename it, so readers never see half of it."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def read_json_mapping(path: str | Path) -> dict:
    """The JSON object in `path`; {} when the file is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
