"""`ldm animate` on tiny pipelines: each walk kind, videos, resume, settings mismatch, bad input."""

import json
import random
import shutil

import numpy as np
import pytest
import torch
from tiny import IMAGE_SIZE, tiny_components

from ldm.apps.animate import renderers, video
from ldm.apps.animate.render import animate
from ldm.apps.animate.resolve import resolve
from ldm.apps.animate.settings import DEFAULT_GUIDANCE, WalkSettings
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.core.images import unit_to_uint8
from ldm.data.shapes.generator import make_example
from ldm.metrics import smoothness
from ldm.sampling.pipeline_io import export_pipeline

PROMPTS = ["a red circle", "a blue square"]
FAST = dict(steps=2, batch_size=4, fps=10.0)
LINEAR = dict(motion="linear")  # one render pass, frames at evenly spaced positions


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two shapes images with their captions, as a user would pass them."""
    folder = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    paths, captions = [], []
    for i in range(2):
        image, meta = make_example(rng, IMAGE_SIZE, held_out=False)
        image.save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
        captions.append(meta["text"])
    return paths, captions


@pytest.fixture(scope="module")
def smooth_pipeline_path(tmp_path_factory):
    """A tiny pipeline whose UNet output is scaled down: a random UNet at full scale is too rough
    for DDIM inversion to retrace (a trained one is smooth), so image walks are tested on this."""
    components = tiny_components("kl")
    with torch.no_grad():
        components["unet"].conv_out.weight.mul_(0.01)
        components["unet"].conv_out.bias.mul_(0.01)
    return export_pipeline(tmp_path_factory.mktemp("smooth") / "pipeline", **components)


@pytest.fixture(scope="module")
def prompt_walk(kl_pipeline_path, tmp_path_factory):
    """A 2-prompt walk with 16 linearly spaced frames, rendered once and shared (read-only) by
    several tests."""
    out = tmp_path_factory.mktemp("walk") / "demo"
    settings = WalkSettings(pipeline=str(kl_pipeline_path), out=str(out), prompts=PROMPTS, seeds=[1, 2],
                            frames=16, **LINEAR, **FAST)
    return settings, animate(settings)


def test_prompt_walk_gives_distinct_frames_and_videos_that_read_back(prompt_walk):
    settings, result = prompt_walk
    frames = video.read_frames(result.out / "frames", 16)
    assert result.frames == result.rendered == 16
    assert len({f.tobytes() for f in frames}) == 16  # no duplicated keyframes
    assert video.video_info(result.gif) == {"frames": 16, "fps": 10.0}
    assert video.video_info(result.mp4) == {"frames": 16, "fps": 10.0}
    report = json.loads((result.out / "smoothness.json").read_text())
    assert report["walk"]["steps"] == 15 and report["walk"]["max"] >= report["walk"]["mean"] > 0


def test_frames_carry_their_place_on_the_walk(prompt_walk):
    from PIL import Image

    _, result = prompt_walk
    first = Image.open(video.frame_path(result.out / "frames", 0)).text
    middle = Image.open(video.frame_path(result.out / "frames", 5)).text
    assert first["prompt"] == PROMPTS[0] and first["seed"] == "1"
    assert middle["prompt"] == " -> ".join(PROMPTS) and middle["seed"] == "1 -> 2"
    assert float(middle["u"]) == pytest.approx(5 / 15)


def test_keyframe_matches_the_pipeline_sampled_with_its_seed(prompt_walk, kl_pipeline_path):
    from ldm.sampling.pipeline_io import load_pipeline
    from ldm.sampling.samplers import make_sampler

    settings, result = prompt_walk
    pipe = load_pipeline(kl_pipeline_path)
    pipe.scheduler = make_sampler(resolve(settings).sampler, pipe.scheduler.config)
    image = pipe([PROMPTS[1]], num_inference_steps=FAST["steps"], guidance_scale=DEFAULT_GUIDANCE,
                 generator=[torch.Generator().manual_seed(2)], output_type="np").images
    last = video.read_frames(result.out / "frames", 16)[-1].astype(int)
    assert np.abs(unit_to_uint8(image)[0].astype(int) - last).max() <= 1


def test_interrupted_render_resumes_with_only_the_missing_frames(prompt_walk, tmp_path, monkeypatch):
    settings, full = prompt_walk
    out = tmp_path / "resumed"
    real_render = renderers.DiffusionWalk.render
    calls = []

    def render_then_die(self, times):  # killed during the third batch
        calls.append(times)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(self, times)

    monkeypatch.setattr(renderers.DiffusionWalk, "render", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        animate(WalkSettings(**{**settings.__dict__, "out": str(out)}))
    assert video.existing_frames(out / "frames") == set(range(8))
    monkeypatch.setattr(renderers.DiffusionWalk, "render", real_render)

    result = animate(WalkSettings(**{**settings.__dict__, "out": str(out), "fps": 10.0}))
    assert result.rendered == 8
    for i in range(16):
        assert video.frame_path(out / "frames", i).read_bytes() == video.frame_path(full.out / "frames", i).read_bytes()
    assert result.gif.read_bytes() == full.gif.read_bytes()


def test_resume_with_other_settings_is_an_error(prompt_walk, tmp_path):
    settings, full = prompt_walk
    out = tmp_path / "copy"
    shutil.copytree(full.out, out)
    with pytest.raises(LdmError, match="steps differ"):
        animate(WalkSettings(**{**settings.__dict__, "out": str(out), "steps": 3}))
    with pytest.raises(LdmError, match="seeds differ"):
        animate(WalkSettings(**{**settings.__dict__, "out": str(out), "seeds": [1, 3]}))
    # delivery settings may change: the frames are reused and only the videos are rewritten
    result = animate(WalkSettings(**{**settings.__dict__, "out": str(out), "fps": 5.0, "video_scale": 2}))
    assert result.rendered == 0 and video.video_info(result.mp4) == {"frames": 16, "fps": 5.0}


def test_even_motion_is_the_default_and_halves_the_unevenness_of_linear_spacing(kl_pipeline_path, tmp_path):
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "even"), prompts=PROMPTS,
                                  seeds=[1, 2], frames=8, **FAST))
    report = result.report
    assert report["motion"] == "even" and report["walk"]["cv"] <= 0.5 * report["linear"]["cv"]
    assert (tmp_path / "even" / "even-motion" / "pass-0").is_dir()
    times = json.loads((tmp_path / "even" / "frames" / "times.json").read_text())
    assert len(times) == 8 and times[0] == 0 and times[-1] == 1 and np.all(np.diff(times) > 0)
    assert not np.allclose(times, np.linspace(0, 1, 8))  # re-spaced, keyframes kept


def test_even_motion_can_measure_motion_in_clip_features(kl_pipeline_path, tmp_path):
    from tiny import tiny_clip, tiny_tokenizer

    from ldm.stages.clip.export import export

    tokenizer = tiny_tokenizer()
    export(tiny_clip(tokenizer), tokenizer, tmp_path / "run", IMAGE_SIZE)
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "clip_walk"),
                                  prompts=PROMPTS, seeds=[1, 2], frames=8,
                                  distance_model=str(tmp_path / "run" / "clip"), **FAST))
    assert result.report["distance"].startswith("CLIP image-feature")
    assert result.report["walk"]["cv"] <= 0.5 * result.report["linear"]["cv"]


def test_looped_seed_walk_closes_without_a_jump(kl_pipeline_path, tmp_path):
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "loop"), kind="seed",
                                  prompts=[PROMPTS[0]], seeds=[1, 2, 3], frames=3, loop=True, **LINEAR,
                                  **FAST))
    assert result.frames == 6  # 3 segments of 2 steps; the first frame is not repeated at the end
    distances = smoothness.adjacent_distances(video.read_frames(result.out / "frames", 6), loop=True)
    assert result.report["walk"]["closing"] == pytest.approx(distances[-1])
    assert distances[-1] <= np.median(distances[:-1]) * 1.5


def autoencoded(pipeline_path, paths) -> np.ndarray:
    """The images as the pipeline's autoencoder gives them back (the tiny one is random: far from
    the originals, but what a walk through them must reproduce)."""
    from ldm.components import autoencoder as vae_lib

    vae = vae_lib.load_vae(pipeline_path / "vae")
    pixels = torch.cat([renderers.load_image_tensor(p, IMAGE_SIZE) for p in paths])
    with torch.no_grad():
        decoded = vae_lib.decode(vae, vae_lib.encode(vae, pixels))
    return unit_to_uint8((decoded.permute(0, 2, 3, 1).numpy() + 1) / 2)


def test_image_walk_passes_through_the_users_images(smooth_pipeline_path, images, tmp_path):
    paths, captions = images
    result = animate(WalkSettings(pipeline=str(smooth_pipeline_path), out=str(tmp_path / "mine"), kind="image",
                                  images=paths, captions=captions, frames=3, steps=5, fps=10.0, **LINEAR))
    frames = [f.astype(int) for f in video.read_frames(result.out / "frames", 3)]
    own = autoencoded(smooth_pipeline_path, paths).astype(int)
    # each end frame is its own image, inverted and sampled back: far closer to it than to the other
    for frame, mine, theirs in ((frames[0], own[0], own[1]), (frames[-1], own[1], own[0])):
        assert np.abs(frame - mine).mean() < 0.5 * np.abs(frame - theirs).mean()
    assert json.loads((result.out / "settings.json").read_text())["sampler"] == "ddim"


def test_autoencoder_walk_decodes_the_encoded_images(kl_pipeline_path, images, tmp_path):
    paths, _ = images
    result = animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(tmp_path / "ae"), kind="autoencoder",
                                  images=paths, frames=5, fps=10.0, **LINEAR))
    expected = autoencoded(kl_pipeline_path, paths)
    frames = video.read_frames(result.out / "frames", 5)
    assert np.array_equal(frames[0], expected[0]) and np.array_equal(frames[-1], expected[1])
    assert "steps" not in json.loads((result.out / "settings.json").read_text())  # no diffusion


BAD_INPUT = [
    (dict(prompts=["a red circle"]), "at least two keyframes"),
    (dict(kind="seed", prompts=["a red circle"], seeds=[1]), "at least two keyframes"),
    (dict(prompts=PROMPTS, seeds=[1]), "2 prompts but 1 seeds"),
    (dict(prompts=PROMPTS, frames=1), "--frames must be at least 2"),
    (dict(prompts=PROMPTS, fps=0.0), "--fps must be positive"),
    (dict(prompts=PROMPTS, sampler="euler-ancestral"), "deterministic sampler"),
    (dict(kind="image", images=["missing.png", "missing.png"], captions=["a", "b"]), "image not found"),
    (dict(prompts=PROMPTS, distance_model="no/such/clip"), "no CLIP model there"),
    (dict(prompts=PROMPTS, height=15), "--height 15 is not a positive multiple"),
    (dict(prompts=PROMPTS, width=0), "--width 0 is not a positive multiple"),
]


# Each value's own range, refused as the settings are made, in one line naming the option.
OUT_OF_RANGE = [
    (dict(frames=1), "--frames must be at least 2, got 1"),
    (dict(fps=-1.0), "--fps must be positive, got -1.0"),
    (dict(fps=float("inf")), "--fps must be a finite number, got inf"),
    (dict(steps=0), "--steps must be at least 1, got 0"),
    (dict(batch_size=0), "--batch-size must be at least 1, got 0"),
    (dict(even_passes=0), "--even-passes must be at least 1, got 0"),
    (dict(video_scale=0), "--video-scale must be at least 1, got 0"),
    (dict(audio_start=-1.0), "--audio-start must be at least 0, got -1.0"),
    (dict(audio_smooth=-0.5), "--audio-smooth must be at least 0, got -0.5"),
    (dict(audio_feature="loudness"), "--audio-feature must be 'onsets' or 'energy', got 'loudness'"),
    (dict(motion="fast"), "--motion must be 'even', 'audio' or 'linear', got 'fast'"),
    (dict(kind="video"), "--kind must be 'prompt', 'seed', 'image' or 'autoencoder', got 'video'"),
    (dict(seeds=["one", 2]), "--seeds[0] must be int, got 'one'"),
    (dict(fsp=10.0), "unknown setting '--fsp'; did you mean '--fps'?"),
]


@pytest.mark.parametrize("bad, message", OUT_OF_RANGE, ids=[m.split(",")[0] for _, m in OUT_OF_RANGE])
def test_walk_settings_refuse_a_value_out_of_range_when_made(bad, message):
    with pytest.raises(LdmError) as err:
        WalkSettings(pipeline="p", out="o", prompts=PROMPTS, **bad)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad, message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_is_a_clear_error_before_rendering(kl_pipeline_path, tmp_path, bad, message):
    out = tmp_path / "never"
    with pytest.raises(LdmError, match=message):
        animate(WalkSettings(pipeline=str(kl_pipeline_path), out=str(out), **bad))
    assert not out.exists()


def test_unreadable_image_and_count_mismatch_from_the_command_line(kl_pipeline_path, images, tmp_path, capsys):
    paths, _ = images
    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    for args, message in ((["--images", paths[0], str(broken), "--captions", "a", "b"], "cannot read image"),
                          (["--images", *paths, "--captions", "only one"], "2 images but 1 captions")):
        with pytest.raises(SystemExit) as exit_info:
            main(["animate", str(kl_pipeline_path), "--out", str(tmp_path / "x"), *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
