"""LatentDiffusionPipeline: Stable Diffusion equivalence, export/load, samplers, image-to-image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from tiny import make_tiny_pipeline

from ldm.core.errors import LdmError
from ldm.sampling.pipeline import LatentDiffusionPipeline
from ldm.sampling.pipeline_io import check_pipeline_folder, load_pipeline
from ldm.sampling.samplers import SAMPLERS, make_sampler

PROMPTS = ["a red circle", "a blue square on a black background"]


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_kl_export_loads_in_stable_diffusion_and_gives_the_same_images(kl_pipeline_path):
    index = json.loads((kl_pipeline_path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    ours = quiet(load_pipeline(kl_pipeline_path))
    theirs = quiet(StableDiffusionPipeline.from_pretrained(kl_pipeline_path, safety_checker=None))
    kwargs = dict(num_inference_steps=4, guidance_scale=4.0, num_images_per_prompt=2,
                  negative_prompt=["green", "red"], output_type="np")
    a = ours(PROMPTS, generator=generators(range(4)), **kwargs).images
    b = theirs(PROMPTS, generator=generators(range(4)), **kwargs).images
    assert a.shape == (4, 16, 16, 3)
    assert np.abs(a - b).max() < 1e-4
    assert a.std() > 0.01  # not a blank image that would agree trivially


def test_vq_export_round_trips(vq_pipeline_path, tmp_path):
    index = json.loads((vq_pipeline_path / "model_index.json").read_text())
    assert index["_class_name"] == "LatentDiffusionPipeline" and index["vae"][1] == "VQModel"
    pipe = quiet(load_pipeline(vq_pipeline_path))
    kwargs = dict(num_inference_steps=3, output_type="np")
    first = pipe(PROMPTS[:1], generator=generators([5]), **kwargs).images
    pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    again = quiet(load_pipeline(tmp_path / "again"))
    assert isinstance(again, LatentDiffusionPipeline)
    np.testing.assert_array_equal(first, again(PROMPTS[:1], generator=generators([5]), **kwargs).images)


def test_image_does_not_depend_on_its_batch(kl_pipeline_path):
    """With one generator per image, image i is the same made alone or among others."""
    pipe = quiet(load_pipeline(kl_pipeline_path))
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, output_type="np")
    batch = pipe([PROMPTS[0]] * 3, generator=generators([7, 8, 9]), **kwargs).images
    alone = pipe([PROMPTS[0]], generator=generators([9]), **kwargs).images
    assert np.abs(batch[2] - alone[0]).max() < 1e-5


def test_image_to_image_stays_near_the_init_image_at_low_strength(kl_pipeline_path):
    from ldm.components.autoencoder import encode

    pipe = quiet(load_pipeline(kl_pipeline_path))
    init = torch.rand(1, 3, 16, 16) * 2 - 1
    target = encode(pipe.vae, init)
    kwargs = dict(num_inference_steps=10, guidance_scale=1.0, output_type="latent", image=init)
    low = pipe(PROMPTS[:1], strength=0.2, generator=generators([0]), **kwargs).images
    high = pipe(PROMPTS[:1], strength=1.0, generator=generators([0]), **kwargs).images
    assert low.shape == target.shape == (1, 4, 8, 8)
    assert (low - target).abs().mean() < (high - target).abs().mean()


@pytest.mark.parametrize("missing", ["model_index.json", "unet/diffusion_pytorch_model.safetensors",
                                     "tokenizer/tokenizer_config.json"])
def test_incomplete_folder_names_the_missing_part(tmp_path, missing):
    path = make_tiny_pipeline(tmp_path)
    (path / missing).unlink()
    with pytest.raises(LdmError, match=missing):
        check_pipeline_folder(path)
    with pytest.raises(LdmError, match="not found"):
        load_pipeline(tmp_path / "nowhere")


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_runs_and_is_reproducible(kl_pipeline_path, name):
    pipe = quiet(load_pipeline(kl_pipeline_path))
    pipe.scheduler = make_sampler(name, pipe.scheduler.config)
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, output_type="np", eta=1.0)
    first = pipe(PROMPTS[:1], generator=generators([1]), **kwargs).images
    again = pipe(PROMPTS[:1], generator=generators([1]), **kwargs).images
    assert first.shape == (1, 16, 16, 3) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)


def test_sampler_keeps_the_training_schedule_and_rejects_unknown_names(kl_pipeline_path):
    pipe = load_pipeline(kl_pipeline_path)
    sampler = make_sampler("dpmsolver++", pipe.scheduler.config)
    assert sampler.config.algorithm_type == "dpmsolver++"
    assert sampler.config.beta_schedule == pipe.scheduler.config.beta_schedule == "scaled_linear"
    with pytest.raises(LdmError, match="unknown sampler 'plms'; choose one of: dpmsolver\\+\\+, dpmsolver\\+\\+-sde"):
        make_sampler("plms", pipe.scheduler.config)


def test_prompt_embeds_give_the_same_images_as_prompts(kl_pipeline_path):
    from ldm.components.text_encoder import encode_prompts

    pipe = quiet(load_pipeline(kl_pipeline_path))
    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, negative_prompt="green", output_type="np")
    from_text = pipe(PROMPTS[:1], generator=generators([4]), **kwargs).images
    embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, PROMPTS[:1])
    from_embeds = pipe(prompt_embeds=embeds, generator=generators([4]), **kwargs).images
    assert np.abs(from_text - from_embeds).max() < 1e-5
