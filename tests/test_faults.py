"""Faults a long run meets: non-finite steps, changed configs on resume, unreadable checkpoints, a second
run in a busy folder, SIGTERM, lost metrics history, half-written files left by killed processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from diffusion_fixtures import diffusion_config
from safetensors.torch import load_file
from test_reproducible import one_thread

from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.stages.autoencoder.export import measure_latent_scale
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import train
from ldm.stages.faults import LOCK_NAME, RunLock
from ldm.stages.plots import read_metric_rows
from ldm.stages.registry import train as train_config

UNET_FILE = Path("pipeline") / "unet" / "diffusion_pytorch_model.safetensors"


def tiny(tmp_path, run, samples=None, **train_settings):
    config = diffusion_config(tmp_path, run, samples={"prompts": []} if samples is None else samples)
    config["train"] = {**config["train"], **train_settings}
    return build(Config, config)


def finished_process_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---- non-finite steps ------------------------------------------------------------------------------

def poison(module, bad_step) -> None:
    """Make `module`'s training loss NaN at the steps where `bad_step(global_step)` is true."""
    plain_loss = module.diffusion_loss

    def loss(*args, **kwargs):  # whatever the engine passes (an SDXL-style UNet's time ids too)
        value = plain_loss(*args, **kwargs)
        return value * float("nan") if module.training and bad_step(module.global_step) else value

    module.diffusion_loss = loss


def test_nan_steps_never_reach_the_weights_and_enough_of_them_stop_the_run(tmp_path, make_stage1_run):
    from ldm.stages.diffusion import train as stage

    run = make_stage1_run(tmp_path)
    train(tiny(tmp_path, run))
    before = load_file(run / UNET_FILE)
    last = run / "diffusion" / "checkpoints" / "last.ckpt"
    weights_before = torch.load(last, weights_only=True)["state_dict"]

    cfg = tiny(tmp_path, run, ckpt_path="last", max_steps=12, max_bad_steps=3)
    module = stage.build_module(cfg)
    poison(module, lambda step: True)  # every step from the resumed one on
    with pytest.raises(LdmError, match=r"not finite .* in 4 optimizer steps in a row, from step 4 to 7"):
        stage.fit(cfg, module, stage.build_datamodule(cfg, module))
    assert all(torch.isfinite(p).all() for p in module.unet.parameters())  # no update went through
    after = load_file(run / UNET_FILE)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the export is as it was
    # checkpoints written during the bad streak hold the good weights: no bad update reached them
    weights_after = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(weights_before[k], weights_after[k]) for k in weights_before)


def test_a_single_bad_step_is_skipped_and_counted(tmp_path, make_stage1_run):
    from ldm.stages.diffusion import train as stage

    run = make_stage1_run(tmp_path)
    cfg = tiny(tmp_path, run, max_steps=4, log_every_n_steps=1)
    module = stage.build_module(cfg)
    poison(module, lambda step: step == 2)
    trainer = stage.fit(cfg, module, stage.build_datamodule(cfg, module))
    assert trainer.global_step == 4  # the skipped step still counts as a step
    assert all(torch.isfinite(p).all() for p in module.unet.parameters())
    rows = read_metric_rows(run / "diffusion" / "csv" / "metrics.csv", 10)
    assert max(values.get("train/skipped_steps", 0) for _, values in rows) == 1


def test_the_latent_scale_refuses_latents_that_do_not_vary():
    from tiny import tiny_autoencoder

    vae = tiny_autoencoder("vq")
    for layer in (vae.encoder.conv_out, vae.quant_conv):  # every image encodes to the same latent
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    loader = [{"pixel_values": torch.rand(4, 3, 16, 16) * 2 - 1}]
    with pytest.raises(LdmError, match=r"standard deviation .* is 0.0"):
        measure_latent_scale(vae, loader, 4, shift=False)


# ---- resume: changed configs, unreadable checkpoints, metrics history --------------------------------

def test_resume_refuses_a_changed_config_unless_the_change_is_safe_or_accepted(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    train(tiny(tmp_path, run))
    with pytest.raises(LdmError, match=r"changed config \(train.lr: 0.001 -> 0.0005\).*--accept-changes train.lr"):
        train(tiny(tmp_path, run, ckpt_path="last", lr=5e-4))
    with pytest.raises(LdmError, match=r"data.batch_size: 4 -> 2"):
        cfg = tiny(tmp_path, run, ckpt_path="last")
        cfg.data.batch_size = 2
        train(cfg)
    # max_steps only says when to stop; an accepted learning rate is the optimizer's from now on
    resumed = train(tiny(tmp_path, run, ckpt_path="last", max_steps=6, lr=5e-4, accept_changes=["train.lr"]))
    assert resumed.trainer.global_step == 6
    assert resumed.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(5e-4)


def test_an_unreadable_last_checkpoint_falls_back_to_the_newest_readable_one(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    train(tiny(tmp_path, run, checkpoint_every_n_steps=2))
    checkpoints = run / "diffusion" / "checkpoints"
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as a copy killed midway leaves it
    with pytest.warns(UserWarning, match="cannot be read .* resuming from .*step00000004.ckpt"):
        resumed = train(tiny(tmp_path, run, ckpt_path="last", max_steps=6))
    assert resumed.trainer.global_step == 6


def test_the_metrics_history_survives_a_resume(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    train(tiny(tmp_path, run, max_steps=4, log_every_n_steps=1))
    train(tiny(tmp_path, run, ckpt_path="last", max_steps=8, log_every_n_steps=1))
    steps = sorted({step for step, values in read_metric_rows(run / "diffusion" / "csv" / "metrics.csv", 100)
                    if "train/loss" in values})
    assert steps[0] < 4 and steps[-1] >= 7  # before and after the resume, in one file
    assert len(steps) == len(set(steps))


def test_files_left_half_written_by_dead_processes_are_removed(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    dead = finished_process_pid()
    stale_checkpoint = run / "diffusion" / "checkpoints" / f".last.ckpt.tmp-{dead}"
    stale_export = run / f".pipeline.tmp-{dead}"
    live_export = run / f".vae.tmp-{os.getpid()}"  # another stage exporting right now: left alone
    for folder in (stale_export / "unet", live_export):
        folder.mkdir(parents=True)
    stale_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    stale_checkpoint.write_bytes(b"half")
    train(tiny(tmp_path, run))
    assert not stale_checkpoint.exists() and not stale_export.exists() and live_export.exists()


# ---- one run at a time -----------------------------------------------------------------------------

def test_a_busy_folder_refuses_a_second_run_and_a_dead_lock_is_taken_over(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    lock = run / "diffusion" / LOCK_NAME
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "now"}))
        with pytest.raises(LdmError, match=rf"busy: another ldm train \(pid {holder.pid}"):
            train(tiny(tmp_path, run))
    finally:
        holder.kill()
        holder.wait()
    assert not (run / "diffusion" / "checkpoints").exists()  # nothing trained
    with pytest.warns(UserWarning, match="taking over"):
        train(tiny(tmp_path, run))
    assert not lock.exists()  # released at the end
    with RunLock(lock.parent):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


# ---- SIGTERM ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_saves_where_the_run_was_and_resume_continues_exactly(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    whole_run = make_stage1_run(tmp_path / "twin")

    def config(run_dir, root):
        path = root / f"{run_dir.name}.yaml"
        settings = diffusion_config(root, run_dir, samples={"prompts": []})
        settings["train"] = {**settings["train"], "max_steps": 16, "checkpoint_every_n_steps": 100}
        path.write_text(yaml.safe_dump(settings))
        return path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def ldm_train(path, *extra):
        return subprocess.Popen([sys.executable, "-m", "ldm", "train", str(path), *extra], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with one_thread():  # the uninterrupted twin in this process, with the children's one thread
        train_config(config(whole_run, tmp_path / "twin"))

    stopped = ldm_train(config(run, tmp_path))
    metrics = run / "diffusion" / "csv" / "metrics.csv"
    while not metrics.exists() and stopped.poll() is None:  # the CSV appears at the first logged step
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=300) == 128 + signal.SIGTERM
    message = stopped.stderr.read()
    assert "stopped by SIGTERM at step" in message and "--resume" in message and "Traceback" not in message
    saved = torch.load(run / "diffusion" / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)
    assert 0 < saved["global_step"] < 16  # where it was, not a periodic checkpoint (none before 100)
    assert not (run / "pipeline").exists()

    resumed = ldm_train(config(run, tmp_path), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    a, b = load_file(whole_run / UNET_FILE), load_file(run / UNET_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
