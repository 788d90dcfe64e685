"""Which processes build a latent cache together, and which of its shards is each one's.

Every process of a run encodes a share of the latent cache (ldm/data/latent_cache/): shard i of n,
where n counts the processes that write into the same cache folder. On one machine that is all of
them. Across machines it depends on where RUN is:
  - on a file system the machines share (NFS, Lustre, ...), all processes build one cache
    between them, each writing its shard into the one folder;
  - on each machine's own disk, each machine builds the whole cache among its own processes
    (a process cannot read a shard written to another machine's disk).

`cache_shared_filesystem` (stage 2's config) says which: true, false, or auto (the default), which
finds out. Auto is a probe: every process writes a small file into the cache folder, all meet at a
barrier (each has only written one file by then, so nobody waits long), then each looks for every
other process's file for up to PROBE_SECONDS. What each process saw is gathered, and the processes
that see each other's files build together. Why a probe rather than waiting for another process's
shard to appear: a shard that has not appeared cannot tell "another disk" from "not done yet"
without a timeout, and a wrong guess either deadlocks or builds the cache twice in one folder.
Processes whose views disagree (a file system that shows some machines' files but not others')
stop with an error asking for the setting to be given.

`node_first` orders work that each machine needs once and then reuses from its own disk (the scan
of the source, which `datasets` caches there): the machine's first process does it, its others
wait for a marker file and then find it cached, instead of all reading every image at once.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch

from ldm.core.atomic import atomic_write_bytes
from ldm.core.errors import LdmError

PROBES = ".probes"  # in the cache folder: one empty file per process while the probe runs
# How long another machine's probe file may take to show up: network file systems cache directory
# lookups for seconds (NFS's attribute cache: 3 to 60 s; a name never looked up before is fetched
# at once, which is why each process looks only after the barrier).
PROBE_SECONDS = 10.0
PROBE_POLL = 0.2

POLL_SECONDS = 0.5  # how often a process waiting for a machine's first one looks for its marker

SharedSetting = bool | Literal["auto"]
T = TypeVar("T")


@dataclass(frozen=True)
class Share:
    """This process builds shard `index` of the `count` shards of each part of the cache."""

    index: int
    count: int


def cache_share(trainer, folder: Path, shared: SharedSetting = "auto") -> Share:
    """This process's share of the cache in `folder` (a collective call when probing: every process
    makes it). Without a trainer (a single process): all of it."""
    if trainer is None or trainer.world_size == 1:
        return Share(0, 1)
    rank, world = trainer.global_rank, trainer.world_size
    if trainer.num_nodes == 1 or shared is True:
        return Share(rank, world)
    if shared is False:
        return Share(trainer.local_rank, world // trainer.num_nodes)
    return probe_share(trainer.strategy, folder, rank, world)


def probe_share(strategy, folder: Path, rank: int, world: int, wait: float = PROBE_SECONDS) -> Share:
    """The share found by probing: each process writes a file, then sees whose files it can read."""
    token = strategy.broadcast(uuid.uuid4().hex if rank == 0 else None)  # this run's: old probes never count
    probes = [folder / PROBES / f"{token}-{other}" for other in range(world)]
    atomic_write_bytes(probes[rank], b"")
    strategy.barrier("latent cache probe")
    seen = visible(probes, wait)
    views = strategy.all_gather(torch.tensor(seen, dtype=torch.uint8, device=strategy.root_device))
    probes[rank].unlink()  # every process has looked: the gather above waited for all of them
    with contextlib.suppress(OSError):  # the last one out removes the folder
        probes[rank].parent.rmdir()
    return share_from_views(views.cpu().reshape(world, world).bool().tolist(), rank, folder)


def visible(paths: list[Path], wait: float) -> list[bool]:
    """Which of `paths` exist, looking again until all do or `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    while True:
        seen = [path.is_file() for path in paths]
        if all(seen) or time.monotonic() >= deadline:
            return seen
        time.sleep(PROBE_POLL)


def share_from_views(views: list[list[bool]], rank: int, folder: Path) -> Share:
    """`views[r][s]`: whether process r saw process s's probe. The processes that see each other
    build together; views that do not split the processes into such groups are an error."""
    groups = [tuple(other for other, seen in enumerate(row) if seen) for row in views]
    for process, group in enumerate(groups):
        if process not in group or any(groups[member] != group for member in group):
            described = "; ".join(f"process {p} sees {', '.join(map(str, g)) or 'none'}" for p, g in enumerate(groups))
            raise LdmError(f"the processes disagree on which of them share the cache folder {folder} "
                           f"({described}): set cache_shared_filesystem: true (one file system for all "
                           "machines) or false (each machine its own)")
    return Share(groups[rank].index(rank), len(groups[rank]))


def node_first(trainer, marker: Path, work: Callable[[], T]) -> T:
    """`work()` in every process, the machine's first process (local rank 0) before its others,
    which wait for `marker` (a file poll, not a collective: no timeout however long it takes).
    The marker is named after the machine, whose disk holds what the work leaves cached."""
    if trainer is None or trainer.world_size == 1:
        return work()
    marker = marker.with_name(f"{marker.name}-{socket.gethostname()}")
    if trainer.local_rank == 0:
        result = work()
        atomic_write_bytes(marker, b"")
        return result
    while not marker.is_file():
        time.sleep(POLL_SECONDS)
    return work()
