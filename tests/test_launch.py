"""`accelerate launch --multi_gpu` runs a stage in several processes, here over gloo on the CPU: on one
machine, on two "machines" (two launches over loopback) that share the latent cache, and on
streamed shards that each process reads and resumes on its own."""

import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from diffusion_fixtures import diffusion_config
from launching import accelerate, child_env, free_port
from shards import write_webdataset

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.text_encoder import TextConditioner
from ldm.data.config import DataConfig
from ldm.data.latent_cache.compare import cache_differences
from ldm.data.latent_datamodule import LatentCacheDataModule
from ldm.data.shapes.generator import make_shapes_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
needs_launcher = pytest.mark.skipif(accelerate() is None, reason="accelerate's launcher is not installed")


def launch(*args: str, machines: int = 1, machine_rank: int = 0, port: int | None = None) -> subprocess.Popen:
    """`accelerate launch --multi_gpu` of `ldm ARGS...` with 2 processes in all, over `machines` machines."""
    command = [accelerate(), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port",
               str(port or free_port())]
    if machines > 1:
        command += ["--num_machines", str(machines), "--machine_rank", str(machine_rank),
                    "--main_process_ip", "127.0.0.1"]
    return subprocess.Popen([*command, "-m", "ldm", *args], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=400)
    assert process.returncode == 0, output[-3000:]
    return output


@needs_launcher
@pytest.mark.slow
def test_autoencoder_trains_in_two_processes_and_exports_once(tmp_path):
    data = make_shapes_dataset(tmp_path / "data", n=48, size=16, seed=0)
    run = tmp_path / "run"
    output = finish(launch(
        "train", str(CONFIGS / "autoencoder" / "kl_f4_shapes.yaml"), f"run_dir={run}", f"data.source={data}",
        "data.resolution=16", "data.batch_size=8", "train.max_steps=4", "train.warmup_steps=0",
        "train.val_every_n_steps=2",
        "train.checkpoint_every_n_steps=2", "train.precision=32-true", "latent_scale.samples=16"))
    assert "8 per process x 2 process(es)" in output
    assert "GLOBAL_RANK: 1" in output
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(run.glob(".vae.tmp-*"))  # the export was written once, by rank 0, whole
    last = torch.load(run / "autoencoder" / "checkpoints" / "last.ckpt", weights_only=True)
    # each process drew its own noise, and the checkpoint holds each one's generator state
    states = last["callbacks"]["ExactResume"]["rng"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


@needs_launcher
@pytest.mark.slow
def test_clip_learns_one_tokenizer_for_every_process(tmp_path):
    data = make_shapes_dataset(tmp_path / "data", n=48, size=16, seed=0)
    run = tmp_path / "run"
    finish(launch("train", str(CONFIGS / "clip" / "clip_shapes.yaml"), f"run_dir={run}", f"data.source={data}",
                  "data.resolution=16", "data.batch_size=8", "train.max_steps=2", "train.warmup_steps=0",
                  "train.val_every_n_steps=2",
                  "validation.zero_shot_split=null", "tokenizer.vocab_size=600", "train.precision=32-true"))
    assert (run / "text_encoder" / "model.safetensors").is_file() and (run / "tokenizer").is_dir()


def diffusion_run(tmp_path: Path, make_stage1_run) -> tuple[Path, Path]:
    """(stage-1 run folder, stage-2 config file) for a 2-step diffusion run on the cache."""
    run = make_stage1_run(tmp_path)
    config = diffusion_config(tmp_path, run, train={"max_steps": 2, "val_every_n_steps": 2,
                                                    "checkpoint_every_n_steps": 2, "limit_val_batches": 1})
    path = tmp_path / "diffusion.yaml"
    path.write_text(yaml.safe_dump(config))
    return run, path


def one_process_cache(tmp_path: Path, run: Path) -> Path:
    """The cache one process builds from the same data and encoders (in another folder), with one
    thread as the launched processes have (CPU kernels round differently with other thread counts)."""
    cfg = DataConfig(**diffusion_config(tmp_path, run)["data"])
    dm = LatentCacheDataModule(cfg, tmp_path / "one-process", FrozenAutoencoder.load(run / "vae"),
                               TextConditioner.load(str(run)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dm.setup()
    finally:
        torch.set_num_threads(threads)
    return dm.folder


def check_shared_cache(output: str, run: Path, tmp_path: Path) -> None:
    """Each process encoded half of the 24 images into its own shard of one cache, logging its wait,
    and the cache equals one built by one process."""
    for shard in (1, 2):
        assert f"shard {shard} of 2: encoded 12 of 24 images" in output
    assert output.count("then waited") == 2
    caches = list((run / "diffusion" / "cache").glob("[!.]*"))  # not .scanned, the scan markers
    assert len(caches) == 1 and len(list(caches[0].glob("*/shard-*-of-00002.json"))) == 2
    alone = one_process_cache(tmp_path, run)
    assert alone.name == caches[0].name  # the same fingerprint: the process count is not part of it
    assert cache_differences(caches[0], alone) == []


@needs_launcher
@pytest.mark.slow
def test_two_processes_build_the_diffusion_cache_together(tmp_path, make_stage1_run):
    run, config = diffusion_run(tmp_path, make_stage1_run)
    output = finish(launch("train", str(config)))
    check_shared_cache(output, run, tmp_path)
    assert (run / "pipeline" / "model_index.json").exists()


@needs_launcher
@pytest.mark.slow
def test_two_machines_over_loopback_share_the_cache_and_export_once(tmp_path, make_stage1_run):
    """The README's several-machines command, one process per "machine", both on this one."""
    run, config = diffusion_run(tmp_path, make_stage1_run)
    port = free_port()
    machines = [launch("train", str(config), machines=2, machine_rank=rank, port=port) for rank in (0, 1)]
    outputs = [finish(machine) for machine in machines]
    assert "GLOBAL_RANK: 1" in outputs[1]
    check_shared_cache("".join(outputs), run, tmp_path)
    assert (run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(run.glob(".pipeline.*"))  # written once, whole
    assert (run / "diffusion" / "checkpoints" / "last.ckpt").exists()


@needs_launcher
@pytest.mark.slow
def test_two_processes_stream_their_own_shards_and_resume_where_each_was(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    write_webdataset(tmp_path / "shapes", tmp_path / "wds", shards=4)  # 24 images: 2 shards, 12 a process
    config = diffusion_config(tmp_path, run, cache=False, samples={"prompts": []},
                              train={"max_steps": 2, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                                     "limit_val_batches": 1})
    config["data"] = {**config["data"], "source": str(tmp_path / "wds" / "*.tar"), "image_column": "png",
                      "caption_column": "txt", "streaming": True, "shuffle_buffer": 0, "batch_size": 2}
    path = tmp_path / "streamed.yaml"
    path.write_text(yaml.safe_dump(config))

    def positions() -> list[dict]:
        checkpoint = torch.load(run / "diffusion" / "checkpoints" / "last.ckpt", weights_only=True)
        return checkpoint["ImageCaptionDataModule"]["stream"]

    finish(launch("train", str(path)))
    # Each process holds out its first 2 batches (4 rows), then trained 2 batches of 2: 4 rows into its training stream.
    assert [(p["epoch"], p["workers"][0]["rows"]) for p in positions()] == [(0, 4), (0, 4)]
    finish(launch("train", str(path), "train.max_steps=4", "--resume"))
    assert [(p["epoch"], p["workers"][0]["rows"]) for p in positions()] == [(0, 8), (0, 8)]
