"""Zero-terminal SNR (`noise.zero_terminal_snr`): the rescaled schedule, what it needs (v-prediction),
and what the export carries for sampling (trailing timesteps, guidance rescale)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from tiny import IMAGE_SIZE, make_tiny_pipeline

from ldm.apps.generate import GenerateOptions, generate
from ldm.cli import main
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.core.images import read_png_metadata
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.sampling.guidance import GuidedDenoiser
from ldm.sampling.pipeline_io import load_pipeline
from ldm.sampling.samplers import GUIDANCE_RESCALE, make_sampler
from ldm.stages.diffusion.config import Config, NoiseConfig
from ldm.stages.diffusion.parts import build_noise_scheduler
from ldm.stages.diffusion.train import train

ZERO_SNR = {"zero_terminal_snr": True, "prediction_type": "v_prediction"}


def test_the_schedule_ends_at_snr_zero_only_with_the_key():
    on = build_noise_scheduler(NoiseConfig(**ZERO_SNR))
    assert on.alphas_cumprod[-1] == 0 and on.alphas_cumprod[-2] > 0
    assert on.config.timestep_spacing == "trailing"
    assert on.config[GUIDANCE_RESCALE] == 0.7  # the paper's, by default
    off = build_noise_scheduler(NoiseConfig(prediction_type="v_prediction"))
    assert off.alphas_cumprod[-1] > 0 and GUIDANCE_RESCALE not in off.config
    # The same betas as diffusers' own rescaling of the same schedule, up to the last one.
    plain = build_noise_scheduler(NoiseConfig())
    assert not torch.allclose(on.betas, plain.betas)
    explicit = build_noise_scheduler(NoiseConfig(**ZERO_SNR, guidance_rescale=0.0))
    assert GUIDANCE_RESCALE not in explicit.config


def test_zero_terminal_snr_with_epsilon_is_refused_naming_both_keys(tmp_path):
    config = {"stage": "diffusion", "run_dir": str(tmp_path), "pretrained": str(tmp_path),
              "data": {"source": str(tmp_path), "resolution": IMAGE_SIZE},
              "noise": {"zero_terminal_snr": True}}
    with pytest.raises(LdmError, match="noise.zero_terminal_snr needs noise.prediction_type: v_prediction") as err:
        build(Config, config)
    assert "\n" not in str(err.value)


def test_guidance_rescale_is_diffusers_and_off_at_zero():
    torch.manual_seed(0)
    def unet(x, t, encoder_hidden_states, return_dict):  # a prediction that depends on the text
        return (x * encoder_hidden_states.mean((1, 2))[:, None, None, None],)

    text, negative = torch.randn(1, 3, 4) + 2, torch.randn(1, 3, 4)
    latents = torch.randn(1, 4, 8, 8)
    plain = GuidedDenoiser(unet, text, negative, scale=7.0)(latents, 0)
    rescaled = GuidedDenoiser(unet, text, negative, scale=7.0, rescale=1.0)(latents, 0)
    cond = unet(latents, 0, text, False)[0]
    assert torch.allclose(rescaled.std(), cond.std(), rtol=1e-4)  # phi = 1: the conditional's spread
    assert torch.equal(GuidedDenoiser(unet, text, negative, scale=7.0, rescale=0.0)(latents, 0), plain)


@pytest.fixture(scope="module")
def zero_snr_run(tmp_path_factory):
    """One training step from a tiny pipeline with zero-terminal SNR on, exported."""
    root = tmp_path_factory.mktemp("zero_snr")
    base = make_tiny_pipeline(root)
    shapes = make_shapes_dataset(root / "shapes", n=8, size=IMAGE_SIZE, seed=0, n_test=2)
    config = {"stage": "diffusion", "run_dir": str(root / "run"), "pretrained": str(base),
              "data": {"source": str(shapes), "resolution": IMAGE_SIZE, "batch_size": 4},
              "noise": ZERO_SNR,
              "train": {"max_steps": 1, "val_every_n_steps": 1, "checkpoint_every_n_steps": 1,
                        "log_every_n_steps": 1, "limit_val_batches": 1},
              "samples": {"prompts": []}}
    stage = train(build(Config, config))
    assert torch.isfinite(stage.trainer.callback_metrics["train/loss"])
    return stage.export


def test_the_export_carries_the_rescale_trailing_spacing_and_guidance_rescale(zero_snr_run):
    saved = json.loads((zero_snr_run / "scheduler" / "scheduler_config.json").read_text())
    assert saved["rescale_betas_zero_snr"] is True
    assert saved["timestep_spacing"] == "trailing"
    assert saved["prediction_type"] == "v_prediction"
    assert saved[GUIDANCE_RESCALE] == 0.7
    # Plain diffusers reads the same schedule: its first sampling step is the SNR-0 one.
    pipe = StableDiffusionPipeline.from_pretrained(zero_snr_run, safety_checker=None)
    assert pipe.scheduler.alphas_cumprod[-1] < 1e-6  # diffusers keeps 2**-24 there, for its sigmas
    pipe.scheduler.set_timesteps(4)
    assert pipe.scheduler.timesteps[0] == 999


def test_ldm_generate_samples_it_without_nan(zero_snr_run, tmp_path):
    written = generate(GenerateOptions(pipeline=str(zero_snr_run), prompts=["a red circle"], steps=3,
                                       out=str(tmp_path / "out")))
    meta = read_png_metadata(written[0])
    assert meta["guidance_rescale"] == "0.7"  # the pipeline's own, used and written
    pipe = load_pipeline(zero_snr_run)
    pipe.set_progress_bar_config(disable=True)
    for sampler in ("dpmsolver++", "euler", "ddim"):
        pipe.scheduler = make_sampler(sampler, pipe.scheduler.config)
        latents = pipe("a red circle", num_inference_steps=3, guidance_scale=4.0, output_type="latent",
                       generator=torch.Generator().manual_seed(0)).images
        assert torch.isfinite(latents).all(), sampler


def test_a_sampler_that_cannot_follow_the_schedule_is_one_line(zero_snr_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", str(zero_snr_run), "a red circle", "--sampler", "heun", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert "sampler 'heun' cannot follow this model's zero-terminal-SNR schedule" in err
    assert len(err.splitlines()) == 1
