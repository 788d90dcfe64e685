"""Every user-facing mode of `ldm generate`, `ldm animate` and `ldm evaluate`, through the CLI as a user
calls it, against pipelines that the project itself exports: the tiny quickstart's KL pipeline and a
tiny VQ pipeline trained with `ldm train` on the shipped configs. (The unit tests use untrained
exports of tiny models, tests/tiny.py; these are what a user has after training.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.cli import main
from ldm.core.images import read_png_metadata
from ldm.sampling.pipeline import LatentDiffusionPipeline
from ldm.sampling.samplers import DEFAULT_SAMPLER, SAMPLERS

TINY_STAGE = ["train.max_steps=2", "train.warmup_steps=0", "data.batch_size=16", "train.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def kl(tmp_path_factory) -> Path:
    """The tiny quickstart's folder: data/, vae/, clip/, text_encoder/, tokenizer/, pipeline/."""
    out = tmp_path_factory.mktemp("quickstart") / "q"
    main(["quickstart", str(out), "--tiny"])
    return out


@pytest.fixture(scope="module")
def vq(kl, tmp_path_factory) -> Path:
    """A VQ run: the shipped VQ autoencoder config, then stage 2 on it with the quickstart's CLIP."""
    run = tmp_path_factory.mktemp("vq")
    data = f"data.source={kl / 'data'}"
    main(["train", "autoencoder/vq_f4_shapes.yaml", f"run_dir={run}", data, *TINY_STAGE, "latent_scale.samples=16"])
    main(["train", "diffusion/ldm_shapes.yaml", f"run_dir={run}", data, f"vae={run / 'vae'}",
          f"text_encoder={kl}", "samples.prompts=[]", *TINY_STAGE])
    return run


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if p.name != "grid.png")


# ---- generate ----------------------------------------------------------------------------------------

GENERATE_MODES = {
    **{f"sampler-{name}": ["--sampler", name] for name in SAMPLERS},
    "img2img": ["--init-image", "{data}/test/000000.png", "--strength", "0.6"],
    "negative-prompt": ["--negative", "a green square"],
    "other-size": ["--height", "48", "--width", "32"],
    "bfloat16": ["--dtype", "bfloat16"],
}


# The sampler modes take 3 steps: with 2, UniPC's images are DPM-Solver++'s exactly (both take the same
# first-order step first, and the last step, to sigma 0, returns the model's clean-image prediction,
# made before UniPC's corrector changes the sample it was made from).
SAMPLER_STEPS = 3


def generate_args(kl: Path, out: Path, steps: int = 2) -> list[str]:
    return ["generate", str(kl / "pipeline"), "a red circle", "a blue square", "--n", "2", "--steps", str(steps),
            "--out", str(out)]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


@pytest.fixture(scope="module")
def default_sampler_images(kl, tmp_path_factory) -> dict[str, np.ndarray]:
    """test_generate's sampler-mode images made without --sampler, by file name (prompt and seed)."""
    out = tmp_path_factory.mktemp("default-sampler") / "out"
    main(generate_args(kl, out, SAMPLER_STEPS))
    return {path.name: pixels(path) for path in images_in(out)}


@pytest.fixture
def samplers_used(monkeypatch) -> list:
    """The scheduler of every pipeline call that `ldm generate` makes, as (class, config)."""
    used = []
    original = LatentDiffusionPipeline.__call__

    def call(self, *args, **kwargs):
        used.append((type(self.scheduler), dict(self.scheduler.config)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LatentDiffusionPipeline, "__call__", call)
    return used


def check_generated(out, mode: str, used: list) -> tuple[list, str]:
    """(the images, the sampler asked for) of a generate mode's run: 4 images and a grid, of the size
    asked for, every one made with the sampler asked for (the default one without --sampler)."""
    written = images_in(out)
    assert len(written) == 4 and (out / "grid.png").is_file()
    if mode == "other-size":
        assert Image.open(written[0]).size == (32, 48)
    sampler = mode.removeprefix("sampler-") if mode.startswith("sampler-") else DEFAULT_SAMPLER
    scheduler_class, settings = SAMPLERS[sampler]
    assert used and all(cls is scheduler_class and settings.items() <= config.items() for cls, config in used)
    return written, sampler


@pytest.mark.parametrize("mode", list(GENERATE_MODES))
def test_generate(mode, kl, tmp_path, samplers_used, request):
    args = [arg.format(data=kl / "data") for arg in GENERATE_MODES[mode]]
    out = tmp_path / "out"
    steps = SAMPLER_STEPS if mode.startswith("sampler-") else 2
    main([*generate_args(kl, out, steps), *args])
    # before the default-sampler run below adds its own
    written, sampler = check_generated(out, mode, list(samplers_used))
    for path in written:  # and says so
        metadata = read_png_metadata(path)
        assert (metadata["sampler"], metadata["steps"]) == (sampler, str(steps))
    if mode.startswith("sampler-"):
        # Against the same prompts and seeds without --sampler: the default sampler gives the same
        # images, any other sampler other images.
        defaults = request.getfixturevalue("default_sampler_images")
        assert sorted(defaults) == [path.name for path in written]
        for path in written:
            difference = np.abs(pixels(path) - defaults[path.name]).mean()
            if sampler == DEFAULT_SAMPLER:
                assert difference == 0, path.name
            else:
                # mean difference over a fiftieth of a level of 255: more than float rounding could make (tcd on
                # this untrained pipeline differs from DPM-Solver++ by 0.085 in one image)
                assert difference > 0.02, path.name


def test_generate_from_a_prompts_file_and_on_vq(kl, vq, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na yellow triangle in the top left\n")
    main(["generate", str(kl / "pipeline"), "--prompts-file", str(prompts), "--steps", "2", "--out",
          str(tmp_path / "file")])
    assert len(images_in(tmp_path / "file")) == 2
    main(["generate", str(vq / "pipeline"), "a red circle", "--steps", "2", "--init-image",
          str(kl / "data" / "test" / "000001.png"), "--out", str(tmp_path / "vq")])
    assert len(images_in(tmp_path / "vq")) == 1


# ---- animate -----------------------------------------------------------------------------------------

ANIMATE_MODES = {
    "prompt": ["--prompts", "a red circle", "a blue square", "--seeds", "1", "2"],
    "prompt-loop-even": ["--prompts", "a red circle", "a blue square", "--loop", "--even-motion"],
    "seed-loop": ["--seed-walk", "--prompt", "a red circle", "--seeds", "1", "2", "3", "--loop"],
    "image": ["--images", "{data}/test/000000.png", "{data}/test/000001.png", "--captions", "a shape", "a shape"],
    "autoencoder": ["--autoencoder", "--images", "{data}/test/000000.png", "{data}/test/000001.png"],
    "prompt-other-size": ["--prompts", "a red circle", "a blue square", "--height", "48", "--width", "32"],
    "image-other-size": ["--images", "{data}/test/000000.png", "{data}/test/000001.png", "--captions", "a shape",
                         "a shape", "--height", "32", "--width", "48"],
}


def animate(pipeline: Path, out: Path, args: list[str]) -> None:
    main(["animate", str(pipeline), "--out", str(out), "--frames", "3", "--steps", "2", "--fps", "4", *args])


@pytest.mark.parametrize("mode", list(ANIMATE_MODES))
def test_animate(mode, kl, tmp_path):
    args = [arg.format(data=kl / "data") for arg in ANIMATE_MODES[mode]]
    out = tmp_path / "walk"
    animate(kl / "pipeline", out, args)
    for name in ("walk.gif", "walk.mp4", "smoothness.json", "settings.json"):
        assert (out / name).is_file(), name
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert json.loads((out / "smoothness.json").read_text())["frames"] == len(frames) >= 3
    if mode.endswith("other-size"):
        width, height = (int(args[args.index(f"--{side}") + 1]) for side in ("width", "height"))
        assert Image.open(frames[0]).size == (width, height)


def test_a_finished_render_reruns_without_rendering_and_vq_walks(kl, vq, tmp_path, capsys):
    args = [arg.format(data=kl / "data") for arg in ANIMATE_MODES["prompt"]]
    animate(kl / "pipeline", tmp_path / "walk", args)
    capsys.readouterr()
    animate(kl / "pipeline", tmp_path / "walk", args)
    assert "this run rendered 0" in capsys.readouterr().out
    for mode in ("prompt", "image"):
        args = [arg.format(data=kl / "data") for arg in ANIMATE_MODES[mode]]
        animate(vq / "pipeline", tmp_path / f"vq-{mode}", args)
        assert (tmp_path / f"vq-{mode}" / "walk.mp4").is_file()


@pytest.mark.slow
def test_two_processes_render_one_walk(kl, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "ldm", "animate", str(kl / "pipeline"), "--out", str(tmp_path / "walk"),
               "--prompts", "a red circle", "a blue square", "--frames", "4", "--steps", "2"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "walk" / "walk.mp4").is_file()
    assert len(list((tmp_path / "walk" / "frames").glob("frame_*.png"))) >= 4


# ---- evaluate ----------------------------------------------------------------------------------------

def test_evaluate_each_kind(kl, vq, tmp_path):
    main(["evaluate", "autoencoder", str(kl / "vae"), "--data", str(kl / "data"), "--out", str(tmp_path / "a.json")])
    main(["evaluate", "autoencoder", str(vq / "vae"), "--data", str(kl / "data"), "--out", str(tmp_path / "v.json")])
    main(["evaluate", "diffusion", str(kl / "pipeline"), "--data", str(kl / "data"), "--n", "1", "--steps", "2",
          "--out", str(tmp_path / "d.json")])
    main(["evaluate", "walk", str(kl / "walk"), "--out", str(tmp_path / "w.json")])
    keys = {name: {m["key"] for m in json.loads((tmp_path / f"{name}.json").read_text())["metrics"]}
            for name in ("a", "v", "d", "w")}
    assert {"psnr", "ssim"} <= keys["a"] and "codebook_usage" in keys["v"]
    assert {"prompt_fidelity", "clip_score", "fid_clip"} <= keys["d"] and "walk_cv" in keys["w"]


# ---- SDXL-style pipelines (issue 31) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def sdxl(kl, tmp_path_factory) -> Path:
    """An SDXL-style run: the shipped ldm_sdxl_shapes.yaml on the quickstart's autoencoder and CLIP."""
    run = tmp_path_factory.mktemp("sdxl")
    main(["train", "diffusion/ldm_sdxl_shapes.yaml", f"run_dir={run}", f"data.source={kl / 'data'}",
          f"vae={kl / 'vae'}", f"text_encoder={kl}", "samples.prompts=[]", *TINY_STAGE])
    return run


@pytest.fixture(scope="module")
def sdxl_lora(kl, sdxl, tmp_path_factory) -> Path:
    """LoRA adapters trained on the SDXL-style run's export (its pretrained start)."""
    run = tmp_path_factory.mktemp("sdxl-lora")
    main(["train", "diffusion/ldm_sdxl_shapes.yaml", f"run_dir={run}", f"data.source={kl / 'data'}",
          f"pretrained={sdxl / 'pipeline'}", "vae=null", "text_encoder=null", "noise=null", "lora.rank=4",
          "samples.prompts=[]", *TINY_STAGE])
    return run / "lora"


SDXL_GENERATE_MODES = {**GENERATE_MODES, "lora": ["--lora", "{lora}"]}


@pytest.mark.parametrize("mode", list(SDXL_GENERATE_MODES))
def test_generate_sdxl(mode, kl, sdxl, tmp_path, samplers_used, request):
    lora = request.getfixturevalue("sdxl_lora") if mode == "lora" else None
    args = [arg.format(data=kl / "data", lora=lora) for arg in SDXL_GENERATE_MODES[mode]]
    out = tmp_path / "out"
    main(["generate", str(sdxl / "pipeline"), "a red circle", "a blue square", "--n", "2", "--steps",
          str(SAMPLER_STEPS), "--out", str(out), *args])
    check_generated(out, mode, samplers_used)


SDXL_ANIMATE_MODES = {**ANIMATE_MODES,
                      "prompt-blend": [*ANIMATE_MODES["prompt"], "--interpolation", "blend"],
                      "prompt-attention": [*ANIMATE_MODES["prompt"], "--interpolation", "attention"]}


@pytest.mark.parametrize("mode", list(SDXL_ANIMATE_MODES))
def test_animate_sdxl(mode, kl, sdxl, tmp_path):
    args = [arg.format(data=kl / "data") for arg in SDXL_ANIMATE_MODES[mode]]
    out = tmp_path / "walk"
    animate(sdxl / "pipeline", out, args)
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert (out / "walk.mp4").is_file() and len(frames) >= 3
    if mode.endswith("other-size"):
        width, height = (int(args[args.index(f"--{side}") + 1]) for side in ("width", "height"))
        assert Image.open(frames[0]).size == (width, height)


def test_evaluate_sdxl(kl, sdxl, tmp_path):
    main(["evaluate", "diffusion", str(sdxl / "pipeline"), "--data", str(kl / "data"), "--clip", str(kl / "clip"),
          "--n", "1", "--steps", "2", "--out", str(tmp_path / "d.json")])
    keys = {m["key"] for m in json.loads((tmp_path / "d.json").read_text())["metrics"]}
    assert {"prompt_fidelity", "clip_score", "fid_clip"} <= keys
