"""`accelerate launch --multi_gpu` runs a stage in several processes, here over gloo on the CPU."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ldm.data.shapes.generator import make_shapes_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not on PATH")
@pytest.mark.slow
def test_autoencoder_trains_in_two_processes_and_exports_once(tmp_path):
    data = make_shapes_dataset(tmp_path / "data", n=48, size=16, seed=0)
    run = tmp_path / "run"
    result = subprocess.run(
        [shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
         "--main_process_port", "29517", "-m", "ldm", "train",
         str(CONFIGS / "autoencoder" / "kl_f4_shapes.yaml"), f"run_dir={run}", f"data.source={data}",
         "data.resolution=16", "data.batch_size=8", "train.max_steps=4", "train.val_every_n_steps=2",
         "train.checkpoint_every_n_steps=2", "train.precision=32-true", "latent_scale.samples=16"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "8 per process x 2 process(es)" in output
    assert "GLOBAL_RANK: 1" in output
    assert (run / "vae" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(run.glob(".vae.tmp-*"))  # the export was written once, by rank 0, whole
    last = torch.load(run / "autoencoder" / "checkpoints" / "last.ckpt", weights_only=True)
    # each process drew its own noise, and the checkpoint holds each one's generator state
    states = last["callbacks"]["ExactResume"]["rng"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


def launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not on PATH")
@pytest.mark.slow
def test_clip_learns_one_tokenizer_for_every_process(tmp_path):
    data = make_shapes_dataset(tmp_path / "data", n=48, size=16, seed=0)
    run = tmp_path / "run"
    result = launch("--main_process_port", "29518", "-m", "ldm", "train", str(CONFIGS / "clip" / "clip_shapes.yaml"),
                    f"run_dir={run}", f"data.source={data}", "data.resolution=16", "data.batch_size=8",
                    "train.max_steps=2", "train.val_every_n_steps=2", "validation.zero_shot_split=null",
                    "tokenizer.vocab_size=600", "train.precision=32-true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "text_encoder" / "model.safetensors").is_file() and (run / "tokenizer").is_dir()
