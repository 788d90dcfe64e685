"""`ldm generate`: seeds, files and metadata, the contact sheet, bad input, and the 2-process split."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from ldm.apps.generate import (
    GRID_NAME,
    GenerateOptions,
    generate,
    image_metadata,
    plan,
)
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.core.images import read_png_metadata
from ldm.sampling.samplers import DEFAULT_SAMPLER

PROMPTS = ["a red circle in the center", "a large blue square on a white background"]
FAST = dict(steps=3, guidance=4.0)


def run_generate(pipeline, out, prompts=PROMPTS, **kwargs):
    options = GenerateOptions(str(pipeline), list(prompts), out=str(out), **{**FAST, **kwargs})
    return options, generate(options)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_files_metadata_and_grid(kl_pipeline_path, tmp_path):
    options, written = run_generate(kl_pipeline_path, tmp_path, n=2, seed=3, negative="green")
    assert sorted(p.name for p in written) == ["0000-seed3.png", "0000-seed4.png",
                                               "0001-seed3.png", "0001-seed4.png"]
    meta = read_png_metadata(tmp_path / "0001-seed4.png")
    assert meta == image_metadata(options, plan(options)[3])
    assert meta["prompt"] == PROMPTS[1] and meta["negative_prompt"] == "green"
    assert (meta["seed"], meta["steps"], meta["guidance"], meta["sampler"]) == ("4", "3", "4.0", DEFAULT_SAMPLER)
    assert meta["model"] == str(kl_pipeline_path.resolve())
    grid = Image.open(tmp_path / GRID_NAME)
    assert grid.width == 2 * 128 and grid.height > 2 * 128  # two tiles a row, captions under the rows


def test_same_command_same_bytes_and_each_image_can_be_remade_alone(kl_pipeline_path, tmp_path):
    run_generate(kl_pipeline_path, tmp_path / "a", prompts=PROMPTS[:1], n=4, seed=7, batch_size=4)
    run_generate(kl_pipeline_path, tmp_path / "b", prompts=PROMPTS[:1], n=4, seed=7, batch_size=4)
    run_generate(kl_pipeline_path, tmp_path / "c", prompts=PROMPTS[:1], n=1, seed=10)
    for seed in range(7, 11):
        name = f"0000-seed{seed}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "0000-seed10.png").read_bytes() == (tmp_path / "c" / "0000-seed10.png").read_bytes()


def test_generate_matches_stable_diffusion(kl_pipeline_path, tmp_path):
    run_generate(kl_pipeline_path, tmp_path, prompts=PROMPTS[:1], seed=5, steps=4)
    # plain diffusers on the folder as exported, its DPM-Solver++ scheduler included
    sd = StableDiffusionPipeline.from_pretrained(kl_pipeline_path, safety_checker=None)
    sd.set_progress_bar_config(disable=True)
    theirs = sd(PROMPTS[0], num_inference_steps=4, guidance_scale=4.0,
                generator=torch.Generator().manual_seed(5)).images[0]
    diff = np.abs(pixels(tmp_path / "0000-seed5.png") - np.asarray(theirs, dtype=np.int16))
    assert diff.max() <= 1  # the same up to rounding to 8 bits


def test_image_to_image_from_the_command_line(kl_pipeline_path, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (20, 20), (200, 30, 30)).save(init)
    main(["generate", str(kl_pipeline_path), PROMPTS[0], "--init-image", str(init), "--strength", "0.5",
          "--steps", "4", "--out", str(tmp_path / "out")])
    meta = read_png_metadata(tmp_path / "out" / "0000-seed0.png")
    assert meta["strength"] == "0.5" and meta["init_image"] == str(init.resolve())
    assert Image.open(tmp_path / "out" / "0000-seed0.png").size == (16, 16)


@pytest.mark.parametrize("args, message", [
    (["NOWHERE", "a"], "pipeline folder not found"),
    (["PIPE"], "no prompts"),
    (["PIPE", "a", "--steps", "0"], "argument --steps: must be from 1 to 1000, got 0"),
    (["PIPE", "a", "--negative", "blue", "--guidance", "1"], "--negative needs --guidance above 1"),
    (["PIPE", "a", "--init-image", "NOT_AN_IMAGE"], "is not an image"),
    (["PIPE", "a", "--height", "15"], "multiple of the autoencoder's downsampling factor 2"),
    (["PIPE", "a", "--device", "gpu0"], "is not a device torch knows"),
    (["PIPE", "a", "--sampler", "fast"], "choose one of: dpmsolver\\+\\+, dpmsolver\\+\\+-sde, ddim"),
])
def test_bad_input_is_one_line_before_loading(kl_pipeline_path, tmp_path, monkeypatch, capsys, args, message):
    def no_loading(*_, **__):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("ldm.sampling.pipeline_io.load_pipeline", no_loading)
    (tmp_path / "NOT_AN_IMAGE").write_text("hello")
    (tmp_path / "empty.txt").write_text("\n\n")
    paths = {"PIPE": str(kl_pipeline_path), "NOWHERE": str(tmp_path / "nowhere"),
             "NOT_AN_IMAGE": str(tmp_path / "NOT_AN_IMAGE")}
    argv = ["generate", *[paths.get(a, a) for a in args], "--out", str(tmp_path / "out")]
    if args == ["PIPE"]:
        argv += ["--prompts-file", str(tmp_path / "empty.txt")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert __import__("re").search(message, error), error


# Each value's own range, refused as the options are made, in one line naming the option.
OUT_OF_RANGE = [
    (dict(n=0), "--n must be at least 1, got 0"),
    (dict(seed=-1), "--seed must be at least 0, got -1"),
    (dict(steps=0), "--steps must be at least 1, got 0"),
    (dict(batch_size=0), "--batch-size must be at least 1, got 0"),
    (dict(eta=1.5), "--eta must be at most 1, got 1.5"),
    (dict(strength=0.0), "--strength must be positive, got 0.0"),
    (dict(strength=2.0), "--strength must be at most 1, got 2.0"),
    (dict(guidance=float("nan")), "--guidance must be a finite number, got nan"),
    (dict(dtype="float64"), "--dtype must be 'float32', 'float16' or 'bfloat16', got 'float64'"),
]


@pytest.mark.parametrize("bad, message", OUT_OF_RANGE, ids=[m.split(",")[0] for _, m in OUT_OF_RANGE])
def test_generate_options_refuse_a_value_out_of_range_when_made(bad, message):
    with pytest.raises(LdmError) as err:
        GenerateOptions("PIPE", ["a red circle"], **bad)
    assert str(err.value) == message


def test_options_not_given_take_the_settings_defaults(kl_pipeline_path, tmp_path, capsys):
    """The command line repeats no default: an option left out is the GenerateOptions field's
    default, and its help shows that default."""
    main(["generate", str(kl_pipeline_path), PROMPTS[0], "--steps", "2", "--out", str(tmp_path / "out")])
    meta = read_png_metadata(tmp_path / "out" / "0000-seed0.png")
    defaults = GenerateOptions("PIPE", ["a"])
    # the sampler's default (None) is the pipeline's own: DPM-Solver++ for a pipeline that is not distilled
    assert (meta["seed"], meta["guidance"], meta["sampler"]) == (str(defaults.seed), str(defaults.guidance),
                                                                DEFAULT_SAMPLER)
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default {defaults.guidance:g})" in shown and f"(default {defaults.batch_size})" in shown


def test_incomplete_pipeline_folder_names_the_missing_part(tmp_path, capsys):
    from tiny import make_tiny_pipeline

    path = make_tiny_pipeline(tmp_path)
    (path / "vae" / "config.json").unlink()
    with pytest.raises(SystemExit):
        main(["generate", str(path), "a"])
    assert "vae/config.json is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_split_the_prompts_and_match_one_process(kl_pipeline_path, tmp_path):
    prompts = ["a red circle", "a blue square", "a green triangle"]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    # One thread, as each of the two processes below has: CPU kernels may sum in another order
    # with another thread count, and a last-bit difference can round a pixel the other way.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_generate(kl_pipeline_path, tmp_path / "one", prompts=prompts, n=2, steps=2)
    finally:
        torch.set_num_threads(threads)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "ldm", "generate", str(kl_pipeline_path), "--prompts-file", str(prompts_file),
               "--n", "2", "--steps", "2", "--guidance", "4", "--out", str(tmp_path / "two"), "--device", "cpu"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = sorted(int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("wrote"))
    assert counts == [2, 4]  # the prompts were split 1 + 2, each image written once
    names = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    for name in names:
        if name != GRID_NAME:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_a_second_run_keeps_the_first_runs_images(kl_pipeline_path, tmp_path, capsys):
    """Without --out a rerun writes samples-2/ beside samples/; an --out holding the images or grid
    it would write is refused before anything loads."""
    import shutil

    pipeline = tmp_path / "pipeline"
    shutil.copytree(kl_pipeline_path, pipeline)
    command = ["generate", str(pipeline), PROMPTS[0], "--steps", "2"]
    main(command)
    first = (tmp_path / "samples" / "0000-seed0.png").read_bytes()
    main(command)
    assert f"to {tmp_path / 'samples-2'}" in capsys.readouterr().out
    assert (tmp_path / "samples" / "0000-seed0.png").read_bytes() == first
    assert (tmp_path / "samples-2" / "0000-seed0.png").is_file() and (tmp_path / "samples-2" / GRID_NAME).is_file()
    with pytest.raises(SystemExit) as stop:
        main([*command, "--out", str(tmp_path / "samples")])
    assert stop.value.code == 2
    assert "already holds results this run would replace (0000-seed0.png, grid.png)" in capsys.readouterr().err
    assert (tmp_path / "samples" / "0000-seed0.png").read_bytes() == first


@pytest.mark.parametrize(("option", "message"), [
    (["--seed", str(2**70)], "argument --seed: must be from 0 to 9223372036854775807"),
    (["--width", "100000"], "argument --width: must be from 8 to 8192, got 100000"),
    (["--guidance", "nan"], "argument --guidance: must be a finite number, got nan"),
    (["--guidance", "-3"], "argument --guidance: must be at least 1 and at most 100, got -3"),
    (["--steps", "0"], "argument --steps: must be from 1 to 1000, got 0"),
], ids=["seed-2**70", "width-100000", "guidance-nan", "guidance-negative", "steps-0"])
def test_an_impossible_option_is_one_line(kl_pipeline_path, tmp_path, capsys, option, message):
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(kl_pipeline_path), PROMPTS[0], "--out", str(tmp_path / "out"), *option])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused(kl_pipeline_path, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(SystemExit):
        main(["generate", str(kl_pipeline_path), PROMPTS[0], "--out", str(taken)])
    assert f"--out {taken} is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine"


def test_an_out_where_nothing_can_be_written_is_one_line(kl_pipeline_path, capsys):
    # /proc refuses new folders even to root (a chmod'ed folder would not stop a root test run)
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(kl_pipeline_path), PROMPTS[0], "--steps", "2", "--out", "/proc/ldm-samples"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "/proc/ldm-samples" in err


def test_truncated_weights_and_an_interrupt_are_one_line(kl_pipeline_path, tmp_path, capsys, monkeypatch):
    import shutil

    from ldm.apps import generate as generate_app

    broken = tmp_path / "broken"
    shutil.copytree(kl_pipeline_path, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(broken), PROMPTS[0], "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()  # after diffusers' loading bars: one line, no traceback
    assert err.splitlines()[-1].startswith(f"ldm generate: error: cannot load the pipeline in {broken}")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # the failed run left no empty folder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_app, "_generate_jobs", interrupted)
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(kl_pipeline_path), PROMPTS[0], "--out", str(tmp_path / "out")])
    assert stop.value.code == 130
    assert capsys.readouterr().err == "\nldm generate: interrupted; the images written so far are kept\n"


def test_the_empty_prompt_is_a_prompt_and_a_long_one_warns_in_one_line(kl_pipeline_path, tmp_path):
    # a child process: pytest records warnings itself instead of letting the command print them
    command = [sys.executable, "-m", "ldm", "generate", str(kl_pipeline_path), "", " ".join(["red"] * 100),
               "--steps", "2", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "0000-seed0.png").is_file() and (tmp_path / "0001-seed0.png").is_file()
    err = result.stderr
    assert "ldm generate: warning: prompt 'red red" in err and "tokens: the end is cut off" in err
    assert "UserWarning" not in err and "warnings.warn" not in err
