"""A run is reproducible from its seed: the same config twice gives the same weights, and a run killed
with SIGKILL and resumed gives the same export as its uninterrupted twin."""

from __future__ import annotations

import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from launching import kill_after_first_checkpoint, ldm_train
from safetensors.torch import load_file
from tiny import TINY_UNET

from ldm.data.shapes.generator import make_shapes_dataset
from ldm.stages.registry import train

SIZE = 16


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=40, size=SIZE, seed=0, n_test=16)


@pytest.fixture(scope="module")
def stage1(shapes, tmp_path_factory):
    """A stage 1 and 1b trained by ldm itself (a few steps), for the diffusion stage to read."""
    run = tmp_path_factory.mktemp("stage1")
    train(write(run / "ae.yaml", autoencoder_config(shapes, run)))
    train(write(run / "clip.yaml", clip_config(shapes, run)))
    return run


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def autoencoder_config(data, run) -> dict:
    return {"stage": "autoencoder", "run_dir": str(run),
            "data": {"source": str(data), "resolution": SIZE, "batch_size": 8, "val_fraction": 0.2},
            "model": {"kind": "kl", "downsampling_factor": 4, "channels": [8, 16, 16], "norm_num_groups": 8},
            "loss": {"perceptual": 0.1, "disc": 0.5, "disc_start": 2, "disc_layers": 2, "disc_channels": 8},
            "latent_scale": {"samples": 16},
            "train": {"max_steps": 4, "lr": 1e-3, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2}}


def clip_config(data, run) -> dict:
    tower = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    return {"stage": "clip", "run_dir": str(run),
            "data": {"source": str(data), "resolution": SIZE, "batch_size": 16, "val_fraction": 0.25},
            "model": {"vision": {**tower, "patch_size": 8}, "text": tower, "projection_dim": 16},
            "tokenizer": {"vocab_size": 600, "max_length": 24},
            "hard_negatives": {"words": [["circle", "square", "triangle"]]},
            "train": {"max_steps": 3, "lr": 1e-3, "val_every_n_steps": 3, "checkpoint_every_n_steps": 3}}


def diffusion_config(data, stage1, run, **train) -> dict:
    return {"stage": "diffusion", "run_dir": str(run), "vae": str(stage1 / "vae"), "text_encoder": str(stage1),
            "data": {"source": str(data), "resolution": SIZE, "batch_size": 4, "val_fraction": 0.1},
            "unet": TINY_UNET, "samples": {"prompts": ["a red circle"], "seeds": [0], "steps": 2},
            "train": {"max_steps": 4, "lr": 1e-3, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                      "limit_val_batches": 1, **train}}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file under `folder`, by file and name."""
    return {f"{path.relative_to(folder)}:{name}": tensor
            for path in sorted(folder.rglob("*.safetensors")) for name, tensor in load_file(path).items()}


def assert_identical(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys() and first
    differ = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[0]}: max abs difference " \
                       f"{(first[differ[0]] - second[differ[0]]).abs().max().item():.3g}"


@pytest.mark.parametrize("stage", ["autoencoder", "clip", "diffusion"])
def test_the_same_config_twice_gives_the_same_weights(stage, shapes, stage1, tmp_path):
    def config(run: Path) -> dict:
        if stage == "diffusion":
            return diffusion_config(shapes, stage1, run)
        return {"autoencoder": autoencoder_config, "clip": clip_config}[stage](shapes, run)

    exports = [train(write(tmp_path / f"{name}.yaml", config(tmp_path / name))).export
               for name in ("first", "second")]
    folders = {"autoencoder": ["."], "clip": ["text_encoder", "clip"], "diffusion": ["."]}[stage]
    for folder in folders:
        assert_identical(exports[0] / folder, exports[1] / folder)


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_run_killed_at_a_random_step_resumes_to_its_uninterrupted_twin(shapes, stage1, tmp_path):
    # 36 training images in batches of 4: 9 steps an epoch, so 20 steps cross two epoch boundaries;
    # validation every 5 steps and checkpoints every 4, as a real config has them (at other intervals).
    settings = {"max_steps": 20, "val_every_n_steps": 5, "checkpoint_every_n_steps": 4}
    whole = write(tmp_path / "whole.yaml", diffusion_config(shapes, stage1, tmp_path / "whole", **settings))
    crash = write(tmp_path / "crash.yaml", diffusion_config(shapes, stage1, tmp_path / "crash", **settings))
    with one_thread():  # as the killed run's process has (another thread count rounds differently)
        train(whole)

    checkpoints = tmp_path / "crash" / "diffusion" / "checkpoints"
    # killed at a random moment after its first checkpoint; on a fast machine that moment may fall
    # after the run has exported, so it is tried again, sooner
    for within_s in (1.5, 0.5, 0.1):
        shutil.rmtree(tmp_path / "crash", ignore_errors=True)
        killed = ldm_train(crash)
        stopped = kill_after_first_checkpoint(killed, checkpoints, within_s)
        if stopped and not (tmp_path / "crash" / "pipeline").exists():
            break
    else:
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    assert killed.returncode == -signal.SIGKILL

    resumed = ldm_train(crash, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()[-3000:]
    assert_identical(tmp_path / "whole" / "pipeline", tmp_path / "crash" / "pipeline")


def test_a_clip_run_resumed_from_a_checkpoint_equals_its_twin(shapes, tmp_path):
    """The hard negatives' swapped words come from the step, not from a generator a resume would reset."""
    settings = {"max_steps": 6, "checkpoint_every_n_steps": 3, "val_every_n_steps": 3}
    whole = train(write(tmp_path / "whole.yaml", {**clip_config(shapes, tmp_path / "whole"),
                                                   "train": {**clip_config(shapes, tmp_path)["train"], **settings}}))
    step3 = tmp_path / "whole" / "clip_training" / "checkpoints" / "step00000003.ckpt"
    resumed_config = clip_config(shapes, tmp_path / "resumed")
    resumed_config["train"] = {**resumed_config["train"], **settings, "ckpt_path": str(step3)}
    resumed = train(write(tmp_path / "resumed.yaml", resumed_config))
    assert resumed.trainer.global_step == whole.trainer.global_step == 6
    assert_identical(whole.export / "text_encoder", resumed.export / "text_encoder")
