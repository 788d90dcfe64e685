"""Smooth Diffusion's step-wise variation regulariser (`loss.smoothness`): off by default and then
training is as before; with a weight, the term is finite, trains the UNet, and measures how far the
predicted clean latent moves per unit of move of the noise."""

from __future__ import annotations

import math

import pytest
import torch
from diffusion_fixtures import diffusion_config

from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.stages.diffusion import train as diffusion_train
from ldm.stages.diffusion.config import Config, LossConfig, NoiseConfig
from ldm.stages.diffusion.parts import build_noise_scheduler, build_smoothness_loss
from ldm.stages.diffusion.smoothness_loss import MEAN_DECAY, StepVariationLoss, predicted_original


def test_off_by_default_and_the_weight_has_a_range(tmp_path):
    scheduler = build_noise_scheduler(NoiseConfig())
    assert LossConfig().smoothness == 0.0 and build_smoothness_loss(LossConfig(), scheduler) is None
    assert build_smoothness_loss(LossConfig(smoothness=0.5), scheduler).weight == 0.5
    base = {"stage": "diffusion", "run_dir": str(tmp_path), "vae": "v", "text_encoder": "t",
            "data": {"source": "d"}}
    for bad in (-1, 1000):
        with pytest.raises(LdmError, match="loss.smoothness"):
            build(Config, {**base, "loss": {"smoothness": bad}})


def linear_case(scale: float, timesteps: torch.Tensor):
    """A 'network' whose predicted x0 is exactly `scale` * noise (v-prediction), and its inputs."""
    scheduler = build_noise_scheduler(NoiseConfig(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"))
    latents = torch.randn(len(timesteps), 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    # x0 = sqrt(a) noisy - sqrt(1 - a) v  =>  v = (sqrt(a) noisy - x0) / sqrt(1 - a)
    prediction = (alpha_bar.sqrt() * noisy - scale * noise) / (1 - alpha_bar).sqrt()
    return scheduler, prediction, noisy, noise


def test_the_variation_is_the_output_move_per_unit_noise_move():
    t = torch.tensor([100, 500, 900])
    scheduler, prediction, noisy, noise = linear_case(2.0, t)
    assert torch.allclose(predicted_original(scheduler, prediction, noisy, t), 2.0 * noise, atol=1e-4)
    loss = StepVariationLoss(scheduler, weight=1.0)
    y = loss.probe(noise, t, torch.Generator().manual_seed(3))
    # |y| is about sqrt(1 - alpha_bar_t): a unit random direction at the noise's own scale
    scale = (1 - scheduler.alphas_cumprod[t]).sqrt()
    assert torch.allclose(y.flatten(1).norm(dim=1), scale, rtol=0.15)
    # x0 = s * noise: J = s I, so |J^T y| = s |y|, and twice the scale moves twice as far
    variation = loss.variation(predicted_original(scheduler, prediction, noisy, t), noise, y)
    assert torch.allclose(variation, 2.0 * y.flatten(1).norm(dim=1), rtol=1e-4)
    _, prediction4, noisy4, noise4 = linear_case(4.0, t)
    variation4 = loss.variation(predicted_original(scheduler, prediction4, noisy4, t), noise4, y)
    assert torch.allclose(variation4, 2 * variation, rtol=1e-4)


def test_the_penalty_is_the_squared_deviation_from_a_running_mean():
    t = torch.tensor([100, 500, 900])
    scheduler, prediction, noisy, noise = linear_case(2.0, t)
    loss = StepVariationLoss(scheduler, weight=1.0).train()

    def penalty_and_variation(seed):
        y = loss.probe(noise, t, torch.Generator().manual_seed(seed))
        variation = 2.0 * y.flatten(1).norm(dim=1)
        return loss(prediction, noisy, noise, t, torch.Generator().manual_seed(seed)), variation

    first, variation = penalty_and_variation(3)  # the first batch starts the mean at its own mean
    assert torch.allclose(loss.mean_variation, variation.mean(), rtol=1e-4)
    assert torch.allclose(first, (variation - variation.mean()).pow(2).mean(), rtol=1e-3)
    before = loss.mean_variation.clone()
    second, variation = penalty_and_variation(4)  # then it moves by MEAN_DECAY towards each batch's
    expected_mean = before + MEAN_DECAY * (variation.mean() - before)
    assert torch.allclose(loss.mean_variation, expected_mean, rtol=1e-4)
    assert torch.allclose(second, (variation - expected_mean).pow(2).mean(), rtol=1e-3)
    # At one timestep, a model that moves every sample's x0 as much per unit noise (the scaled
    # identity) scores about 0: only |y|'s own spread is left, a few percent of the variation.
    same_t = torch.tensor([500, 500, 500])
    scheduler, prediction, noisy, noise = linear_case(2.0, same_t)
    even = StepVariationLoss(scheduler, weight=1.0).train()
    assert even(prediction, noisy, noise, same_t) < 1e-3 * loss.mean_variation ** 2 * 100
    with pytest.raises(ValueError, match="require a gradient"):
        loss(prediction, noisy, noise.detach(), t)


def tiny_module(tmp_path, make_stage1_run, **loss):
    run = make_stage1_run(tmp_path)
    cfg = build(Config, diffusion_config(tmp_path, run, loss={"snr_gamma": 5.0, **loss}))
    module = diffusion_train.build_module(cfg).train()
    module.log = lambda *args, **kwargs: None  # no Trainer here to log to
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    batch = {"mean": latents, "embeddings": module.conditioner.encode(["a red circle", "a blue square"])}
    return module, batch


def test_off_the_training_step_is_the_plain_denoising_loss(tmp_path, make_stage1_run):
    module, batch = tiny_module(tmp_path, make_stage1_run)
    assert module.smoothness is None and not any("smoothness" in key for key in module.state_dict())
    torch.manual_seed(0)
    step = module.training_step(batch, 0)
    torch.manual_seed(0)
    latents, embeddings = module.latents_and_embeddings(batch, drop_captions=True)
    assert torch.equal(step, module.diffusion_loss(latents, embeddings))


def test_on_the_term_is_finite_and_trains_the_unet(tmp_path, make_stage1_run):
    module, batch = tiny_module(tmp_path, make_stage1_run, smoothness=1.0)
    assert "smoothness.mean_variation" in module.state_dict()  # checkpoints carry the running mean
    torch.manual_seed(0)
    plain = module.diffusion_loss(*module.latents_and_embeddings(batch, drop_captions=True))
    torch.manual_seed(0)
    total = module.training_step(batch, 0)
    assert math.isfinite(total.item()) and total.item() >= plain.item() - 1e-6
    total.backward()
    grads = [p.grad for p in module.unet.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # The penalty alone reaches the weights (through the Jacobian: a gradient of a gradient).
    module.zero_grad()
    prediction, noisy, noise, t = module.denoise(*module.latents_and_embeddings(batch), track_noise=True)
    module.smoothness(prediction, noisy, noise, t).backward()
    assert sum(p.grad.abs().sum() for p in module.unet.parameters() if p.grad is not None) > 0


def test_a_run_with_the_term_trains_and_checkpoints_its_mean(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    trained = diffusion_train.train(build(Config, diffusion_config(tmp_path, run, loss={"smoothness": 1.0})))
    assert trained.module.smoothness.started and trained.module.smoothness.mean_variation > 0
    assert math.isfinite(trained.trainer.callback_metrics["train/smoothness"].item())
    checkpoint = max(run.rglob("*.ckpt"), key=lambda path: path.stat().st_mtime)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(state["smoothness.mean_variation"], trained.module.smoothness.mean_variation)
