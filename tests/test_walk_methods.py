"""`ldm animate --interpolation`: every method's frames at the keyframes are the keyframe images,
a resumed render makes the same bytes, "slerp", "blend" and "attention" never dissolve and move
evenly, and a wrong method is one line."""

import json

import numpy as np
import pytest
import torch

from ldm.apps.animate import video
from ldm.apps.animate.attention_walk import beta_cdf, beta_quantile
from ldm.apps.animate.blend import LEVELS, branch_steps
from ldm.cli import main
from ldm.core.images import unit_to_uint8

PROMPTS = ["a red circle", "a blue square"]
METHODS = ["dissolve", "slerp", "blend", "attention"]
STEPS = 3  # enough for the blend tree to branch at two different steps


@pytest.fixture(scope="module")
def keyframe_images(kl_pipeline_path) -> list[np.ndarray]:
    """What `ldm generate` makes of each prompt with its seed (1, 2), the walk's sampler and guidance."""
    from ldm.sampling.samplers import DETERMINISTIC_SAMPLER
    from ldm.sampling.text_to_image import sampling_pipeline

    pipe = sampling_pipeline(kl_pipeline_path, DETERMINISTIC_SAMPLER)  # the walks' sampler
    pipe.set_progress_bar_config(disable=True)
    return [unit_to_uint8(pipe([prompt], num_inference_steps=STEPS, guidance_scale=4.0,
                               generator=[torch.Generator().manual_seed(seed)], output_type="np").images)[0]
            for prompt, seed in zip(PROMPTS, (1, 2))]


def walk_args(pipeline_path, out, method: str, *extra: str) -> list[str]:
    return ["animate", str(pipeline_path), "--prompts", *PROMPTS, "--seeds", "1", "2", "--steps", str(STEPS),
            "--batch-size", "2", "--interpolation", method, "--out", str(out), *extra]


@pytest.mark.parametrize("method", METHODS)
def test_keyframes_are_the_keyframe_images_and_a_resumed_loop_makes_the_same_bytes(kl_pipeline_path, tmp_path,
                                                                                   keyframe_images, method):
    out = tmp_path / method
    args = walk_args(kl_pipeline_path, out, method, "--loop", "--frames", "4", "--linear")
    main(args)
    frames = video.read_frames(out / "frames", 6)  # a loop of 2 segments of 3 steps: keyframes at 0 and 3
    assert np.array_equal(frames[0], keyframe_images[0]) and np.array_equal(frames[3], keyframe_images[1])

    first = {i: video.frame_path(out / "frames", i).read_bytes() for i in range(6)}
    for i in (2, 3, 5):  # one batch whole, one half: rendered again by a fresh process's renderer
        video.frame_path(out / "frames", i).unlink()
    main(args)
    assert all(video.frame_path(out / "frames", i).read_bytes() == first[i] for i in range(6))


@pytest.mark.parametrize("method", ["blend", "attention"])
def test_an_even_walk_moves_evenly_without_dissolving(kl_pipeline_path, tmp_path, method):
    from PIL import Image

    out = tmp_path / method
    main(walk_args(kl_pipeline_path, out, method, "--frames", "8"))
    report = json.loads((out / "smoothness.json").read_text())
    assert "jumps" not in report and not (out / "even-motion" / "jumps").exists()
    texts = [Image.open(video.frame_path(out / "frames", i)).text for i in range(8)]
    assert not any("dissolve" in text for text in texts)
    assert report["walk"]["cv"] <= 0.3 and report["walk"]["max"] <= 2 * np.median(report["distances"])
    saved = json.loads((out / "settings.json").read_text())
    assert saved["interpolation"] == method and "dissolve_jumps" not in saved


def test_blend_frames_are_continuous_across_the_tree(kl_pipeline_path):
    """Where a frame's two grid neighbours change (a cell boundary) and beside a keyframe, frames
    a hair apart are nearly one picture: the layout cannot flip between neighbours."""
    from ldm.apps.animate.renderers import prompt_walk
    from ldm.metrics.smoothness import frame_distance
    from ldm.sampling.pipeline_io import load_pipeline

    pipe = load_pipeline(kl_pipeline_path)
    pipe.set_progress_bar_config(disable=True)
    walk = prompt_walk(pipe, PROMPTS, [1, 2], "", False, STEPS, [4.0, 4.0], (16, 16), "blend")
    boundary, eps = 3 / 2 ** LEVELS, 1e-5
    frames = walk.render([boundary - eps, boundary + eps, 0.0, eps, 0.5])
    step = frame_distance(frames[2], frames[4])  # half a segment
    assert frame_distance(frames[0], frames[1]) < 0.02 * step
    assert frame_distance(frames[2], frames[3]) < 0.05 * step


def test_the_blend_tree_branches_late_and_below_the_last_step():
    assert branch_steps(20) == [10, 12, 14, 16]  # latentblending's depth_strength 0.5, frames at 0.8
    assert branch_steps(2) == [1, 1, 1, 1] and branch_steps(1) == [0, 0, 0, 0]


def test_the_beta_prior_inverts_its_cdf_and_keeps_the_ends():
    assert beta_quantile(0.0) == 0.0 and beta_quantile(1.0) == 1.0 and beta_quantile(0.5) == pytest.approx(0.5)
    for p in (0.1, 0.3, 0.9):
        assert beta_cdf(beta_quantile(p, 3, 3), 3, 3) == pytest.approx(p)
    assert beta_cdf(0.5, 3, 3) == pytest.approx(0.5) and beta_cdf(0.2, 1, 1) == pytest.approx(0.2)


def test_a_wrong_method_is_one_line(kl_pipeline_path, tmp_path, capsys):
    for args, message in ((["--interpolation", "wobble"],
                           "--interpolation must be 'dissolve', 'slerp', 'blend' or 'attention', got 'wobble'"),
                          (["--interpolation", "blend", "--autoencoder", "--images", "a.png", "b.png"],
                           "--interpolation blend is for walks through the diffusion model")):
        if "--autoencoder" not in args:
            args = ["--prompts", *PROMPTS, *args]
        with pytest.raises(SystemExit) as exit_info:
            main(["animate", str(kl_pipeline_path), "--out", str(tmp_path / "never"), *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "never").exists()


def test_help_lists_the_methods(capsys):
    with pytest.raises(SystemExit):
        main(["animate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--interpolation METHOD" in text and "(default dissolve)" in text
    for method in METHODS:
        assert method in text
