"""The latent cache built in shards: any number of processes give the same cache, an interrupted build
keeps its finished shards, and processes find out which of them share the cache folder."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from shards import write_webdataset

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.core.errors import LdmError
from ldm.data.cache_share import PROBES, Share, cache_share, node_first, probe_share, share_from_views
from ldm.data.config import DataConfig
from ldm.data.latent_cache import build
from ldm.data.latent_cache.build import build_shard, finish_cache, plan_parts, wait_for_shards
from ldm.data.latent_cache.compare import cache_differences
from ldm.data.latent_cache.read import cached, load_cache
from ldm.data.sources import load_source
from ldm.data.sources.scan import drop_unusable


class Inputs:
    """A scanned dataset and the two encoders, as a process building the cache has them."""

    def __init__(self, tmp_path: Path, run: Path, **data):
        data = {"source": str(tmp_path / "shapes"), **data}
        self.cfg = DataConfig(resolution=16, batch_size=4, **data)
        self.ds = drop_unusable(load_source(self.cfg), self.cfg)
        self.plan = plan_parts(self.ds, self.cfg)
        self.autoencoder = FrozenAutoencoder.load(run / "vae")
        self.conditioner = TextConditioner.load(str(run))

    def build(self, folder: Path, index: int, count: int):
        return build_shard(self.ds, self.plan, self.cfg, self.autoencoder, self.conditioner, folder, index, count,
                           progress=False)

    def finish(self, folder: Path, count: int) -> None:
        assert wait_for_shards(folder, [size for size, _ in self.plan], count, poll=0.01) < 1.0
        finish_cache(folder, self.plan, count)


def test_two_shards_read_back_as_the_one_process_cache(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    inputs = Inputs(tmp_path, run)
    whole, halves = tmp_path / "one", tmp_path / "two"
    report = inputs.build(whole, 0, 1)
    inputs.finish(whole, 1)
    assert report.rows == 24 and report.reused == 0
    shares = [inputs.build(halves, index, 2) for index in range(2)]
    assert [share.rows for share in shares] == [12, 12]  # each process encodes half
    assert not cached(halves)  # no parts.json until the last shard is marked and the build finished
    inputs.finish(halves, 2)
    assert cache_differences(whole, halves) == []
    markers = sorted(halves.glob("*/*.json"))
    assert [json.loads(m.read_text())["rows"] for m in markers] == [12, 12]
    # The rows read back are the data's rows in order: row 13 is image 13's caption.
    assert load_cache(halves)[0]["captions"][13] == [inputs.ds[13]["text"]]


def test_decoding_in_dataloader_workers_changes_nothing(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    for workers, folder in ((0, tmp_path / "main"), (2, tmp_path / "workers")):
        inputs = Inputs(tmp_path, run, num_workers=workers)
        inputs.build(folder, 0, 1)
        inputs.finish(folder, 1)
    assert cache_differences(tmp_path / "main", tmp_path / "workers") == []


def test_webdataset_shards_cache_as_their_imagefolder_does(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    write_webdataset(tmp_path / "shapes", tmp_path / "wds", shards=3)
    tars = Inputs(tmp_path, run, source=str(tmp_path / "wds" / "*.tar"), image_column="png", caption_column="txt")
    for inputs, folder in ((Inputs(tmp_path, run), tmp_path / "folder"), (tars, tmp_path / "tars")):
        for index in range(2):
            inputs.build(folder, index, 2)
        inputs.finish(folder, 2)
    assert cache_differences(tmp_path / "folder", tmp_path / "tars") == []


def test_more_shards_than_rows_and_buckets(tmp_path, make_stage1_run):
    """Bucket parts of a few images each, split 5 ways: empty shards are written and read back too."""
    run = make_stage1_run(tmp_path, n_images=6)
    inputs = Inputs(tmp_path, run, buckets={"sizes": [[16, 16], [24, 16]]}, val_fraction=0.0)
    inputs.build(tmp_path / "one", 0, 1)
    inputs.finish(tmp_path / "one", 1)
    for index in range(5):
        inputs.build(tmp_path / "five", index, 5)
    inputs.finish(tmp_path / "five", 5)
    assert cache_differences(tmp_path / "one", tmp_path / "five") == []


def test_an_interrupted_build_keeps_its_finished_shards(tmp_path, make_stage1_run, monkeypatch):
    run = make_stage1_run(tmp_path)
    inputs = Inputs(tmp_path, run)
    folder = tmp_path / "cache"
    assert inputs.build(folder, 0, 2).rows == 12

    # Shard 1's build dies after its first batch: nothing of it is left behind.
    real_encoder = build._encoder

    def dying_encoder(*args):
        encode, calls = real_encoder(*args), []

        def encode_then_die(batch):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return encode(batch)

        return encode_then_die

    monkeypatch.setattr(build, "_encoder", dying_encoder)
    with pytest.raises(KeyboardInterrupt):
        inputs.build(folder, 1, 2)
    monkeypatch.undo()
    part = folder / "16x16"
    assert sorted(p.name for p in part.iterdir()) == ["shard-00000-of-00002.arrow", "shard-00000-of-00002.json"]

    # What a kill -9 leaves instead: a temporary file, or a shard renamed into place but not marked.
    (part / ".shard-00001-of-00002.arrow.tmp-999999").write_bytes(b"half")
    (part / "shard-00001-of-00002.arrow").write_bytes(b"unmarked")

    # The restarted build keeps shard 0 and redoes shard 1.
    again = [inputs.build(folder, index, 2) for index in range(2)]
    assert (again[0].reused, again[0].rows) == (1, 0)
    assert (again[1].reused, again[1].rows) == (0, 12)
    assert not list(part.glob(".*"))
    inputs.finish(folder, 2)
    inputs.build(tmp_path / "one", 0, 1)
    inputs.finish(tmp_path / "one", 1)
    assert cache_differences(tmp_path / "one", folder) == []


def test_a_finished_process_waits_for_the_other_shards_markers(tmp_path):
    size = (16, 16)
    part = tmp_path / "16x16"
    part.mkdir()
    (part / "shard-00000-of-00002.json").write_text("{}")

    def other_process_finishes():
        time.sleep(0.3)
        (part / "shard-00001-of-00002.json").write_text("{}")

    thread = threading.Thread(target=other_process_finishes)
    thread.start()
    waited = wait_for_shards(tmp_path, [size], 2, poll=0.01)
    thread.join()
    assert 0.25 < waited < 5


def test_processes_that_see_each_other_build_together():
    both, alone = [True, True], [[True, False], [False, True]]
    assert share_from_views([both, both], 1, Path("c")) == Share(1, 2)
    assert share_from_views(alone, 1, Path("c")) == Share(0, 1)
    # Two machines of two processes each, each machine with its own disk.
    node = [[True, True, False, False], [True, True, False, False], [False, False, True, True],
            [False, False, True, True]]
    assert [share_from_views(node, rank, Path("c")) for rank in range(4)] == [Share(0, 2), Share(1, 2)] * 2
    with pytest.raises(LdmError, match="cache_shared_filesystem"):
        share_from_views([[True, True], [False, True]], 0, Path("c"))


class ThreadStrategy:
    """Lightning's strategy collectives for processes played by threads (a test stand-in)."""

    root_device = torch.device("cpu")

    def __init__(self, world: int):
        self.world, self.meeting, self.slots = world, threading.Barrier(world), [None] * world
        self.rank = threading.local()

    def barrier(self, name: str | None = None) -> None:
        self.meeting.wait()

    def _exchange(self, value) -> list:
        self.slots[self.rank.value] = value
        self.meeting.wait()
        values = list(self.slots)
        self.meeting.wait()
        return values

    def broadcast(self, obj, src: int = 0):
        return self._exchange(obj)[src]

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._exchange(tensor))


@pytest.mark.parametrize("shared", [True, False])
def test_the_probe_finds_out_whether_the_folder_is_shared(tmp_path, shared):
    strategy, found = ThreadStrategy(2), {}

    def process(rank: int):
        strategy.rank.value = rank
        folder = tmp_path / ("cache" if shared else f"disk{rank}") / "key"  # unshared: each its own disk
        found[rank] = probe_share(strategy, folder, rank, 2, wait=0.3)

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == ({0: Share(0, 2), 1: Share(1, 2)} if shared else {0: Share(0, 1), 1: Share(0, 1)})
    assert not [p for p in tmp_path.rglob(f"{PROBES}/*") if p.is_file()]  # probes removed


def test_the_setting_or_one_machine_needs_no_probe():
    class Trainer:
        world_size, global_rank, local_rank, num_nodes, strategy = 4, 3, 1, 2, None

    assert cache_share(None, Path("c")) == Share(0, 1)
    assert cache_share(Trainer(), Path("c"), True) == Share(3, 4)
    assert cache_share(Trainer(), Path("c"), False) == Share(1, 2)
    Trainer.num_nodes = 1
    assert cache_share(Trainer(), Path("c")) == Share(3, 4)


def test_a_machines_first_process_scans_before_its_others(tmp_path):
    """`node_first`: the second process starts its work only once the first has finished its own."""
    events = []

    def process(local_rank: int):
        trainer = type("Trainer", (), {"world_size": 2, "local_rank": local_rank})()

        def work():
            events.append(("start", local_rank))
            time.sleep(0.2)
            events.append(("end", local_rank))
            return local_rank

        assert node_first(trainer, tmp_path / "scanned", work) == local_rank

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (1, 0)]  # the second one first
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events == [("start", 0), ("end", 0), ("start", 1), ("end", 1)]
