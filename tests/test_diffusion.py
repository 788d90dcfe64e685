"""Stage 2 on tiny models: training, EMA, caption dropout, loss targets and the export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline
from diffusion_fixtures import diffusion_config
from safetensors.torch import load_file
from tiny import TINY_UNET

from ldm.components.text_encoder import TextConditioner
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.stages.diffusion import train as diffusion_train  # the module, where train() builds its LatentDiffusion
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.losses import DiffusionLoss
from ldm.stages.diffusion.module import LatentDiffusion
from ldm.stages.diffusion.parts import NoiseConfig, build_noise_scheduler
from ldm.stages.diffusion.train import train
from ldm.stages.registry import load_config

# The configs an export writes, which say what each part is (not what it learnt).
CONFIGS = ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
           "text_encoder/config.json")


def configs(pipeline) -> dict[str, dict]:
    read = {name: json.loads((pipeline / name).read_text()) for name in CONFIGS}
    return {name: {key: value for key, value in config.items() if key != "_name_or_path"}
            for name, config in read.items()}


def files(pipeline) -> list[str]:
    return sorted(str(path.relative_to(pipeline)) for path in pipeline.rglob("*") if path.is_file())


def test_a_few_steps_then_export_loads_in_stable_diffusion(tmp_path, make_stage1_run, kl_pipeline_path):
    run = make_stage1_run(tmp_path)
    cfg = build(Config, diffusion_config(tmp_path, run))
    module = train(cfg).module

    # EMA: followed every optimizer step, differs from the raw weights, and went into the export.
    assert module.ema.optimization_step == 4
    exported = load_file(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    ema = dict(zip([name for name, _ in module.unet.named_parameters()], module.ema.shadow_params))
    name = "conv_in.weight"
    assert torch.allclose(exported[name], ema[name].cpu())
    assert not torch.allclose(exported[name], module.unet.conv_in.weight.detach().cpu())
    # Validation wrote sample grids (2 validations: steps 2 and 4) with their metadata.
    grids = sorted((run / "diffusion" / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step00000002.png", "step00000004.png"]

    pipe = StableDiffusionPipeline.from_pretrained(run / "pipeline", safety_checker=None)
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=4.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3)
    # The tiny pipelines the other tests share (tests/tiny.py) are this export of the same tiny models,
    # untrained: the same files, the same DPM-Solver++ scheduler, the same measured latent scale.
    assert files(run / "pipeline") == files(kl_pipeline_path)
    assert configs(run / "pipeline") == configs(kl_pipeline_path)
    assert configs(kl_pipeline_path)["vae/config.json"]["scaling_factor"] != 1.0

    # Resume: the EMA comes back from the checkpoint and goes on counting.
    cfg = build(Config, diffusion_config(tmp_path, run, train={**diffusion_config(tmp_path, run)["train"],
                                                              "max_steps": 6, "ckpt_path": "last"}))
    resumed = train(cfg).module
    assert resumed.ema.optimization_step == 6


def test_without_cache_encodes_on_the_fly(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    cfg = build(Config, diffusion_config(tmp_path, run, cache=False, samples={"prompts": []}))
    train(cfg)
    assert not (run / "diffusion" / "cache").exists()
    assert (run / "pipeline" / "model_index.json").is_file()


def _norm(tensors: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors])).item()


def test_mixed_precision_with_gradient_clipping(tmp_path, make_stage1_run, monkeypatch):
    """bf16-mixed with gradient_clip=1.0: the UNet's forward runs under bf16 autocast, while its weights
    (the master copy the optimizer updates) and their gradients stay float32; every optimizer step's
    gradients are clipped to norm 1 before the step; the loss stays finite and the weights move."""
    seen = {"activations": [], "losses": [], "clips": []}

    class Recording(LatentDiffusion):
        def on_fit_start(self):
            super().on_fit_start()
            seen["initial"] = [p.detach().clone() for p in self.trained_parameters()]
            self.unet.conv_in.register_forward_hook(
                lambda module, args, out: seen["activations"].append(out.dtype) if module.training else None)

        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            seen["losses"].append(loss.detach().float().item())
            return loss

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            grads = [p.grad for p in self.trained_parameters() if p.grad is not None]
            before = _norm(grads)
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            seen["clips"].append((gradient_clip_val, before, _norm(grads), {g.dtype for g in grads}))

    monkeypatch.setattr(diffusion_train, "LatentDiffusion", Recording)
    run = make_stage1_run(tmp_path)
    config = diffusion_config(tmp_path, run, samples={"prompts": []})
    config["train"] = {**config["train"], "precision": "bf16-mixed", "gradient_clip": 1.0, "max_steps": 2}
    trained = train(build(Config, config))
    trainer, module = trained.trainer, trained.module
    assert trainer.global_step == 2 and (run / "pipeline" / "model_index.json").is_file()
    assert trainer.precision == "bf16-mixed"
    # Lightning cannot clip a fused optimizer's gradients under mixed precision: the plain one is used.
    assert not trainer.optimizers[0].defaults["fused"]

    # The forward ran in bf16 (autocast), every training step.
    assert seen["activations"] and set(seen["activations"]) == {torch.bfloat16}
    assert len(seen["losses"]) == 2 and all(math.isfinite(loss) for loss in seen["losses"])
    # Each optimizer step clipped its float32 gradients to the configured norm.
    assert len(seen["clips"]) == 2
    for clip_val, before, after, dtypes in seen["clips"]:
        assert clip_val == 1.0 and dtypes == {torch.float32}
        assert math.isclose(after, min(before, 1.0), rel_tol=1e-3)
    assert any(before > 1.0 for _, before, _, _ in seen["clips"])  # the clip had something to do
    # The master weights stay float32 and moved.
    weights = module.trained_parameters()
    assert {p.dtype for p in weights} == {torch.float32}
    assert any(not torch.equal(p.detach(), p0) for p, p0 in zip(weights, seen["initial"]))
    exported = load_file(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.float32}


def test_caption_dropout_rate(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path, n_images=1)
    conditioner = TextConditioner.load(str(run), dropout=0.25)
    embeddings = conditioner.encode(["a red circle"]).expand(4000, -1, -1)
    dropped = conditioner.drop_captions(embeddings, torch.Generator().manual_seed(0))
    empty = conditioner.empty_embedding()
    is_empty = (dropped == empty).flatten(1).all(1)
    kept = (dropped == embeddings).flatten(1).all(1)
    assert torch.all(is_empty ^ kept)
    assert abs(is_empty.float().mean().item() - 0.25) < 0.03


def test_loss_targets_and_min_snr_weights():
    latents, noise = torch.randn(8, 4, 4, 4), torch.randn(8, 4, 4, 4)
    t = torch.tensor([0, 10, 100, 300, 500, 700, 900, 999])
    v_scheduler = build_noise_scheduler(NoiseConfig(prediction_type="v_prediction"))
    v_loss = DiffusionLoss(v_scheduler, "v_prediction", snr_gamma=5.0)
    assert torch.allclose(v_loss.target(latents, noise, t), v_scheduler.get_velocity(latents, noise, t))
    eps_loss = DiffusionLoss(build_noise_scheduler(NoiseConfig()), "epsilon", snr_gamma=5.0)
    assert torch.equal(eps_loss.target(latents, noise, t), noise)
    weights = eps_loss.weights(t)
    # Low-noise steps (high SNR) are weighted down to gamma / SNR; high-noise steps keep weight 1.
    assert weights[0] < 0.01 and torch.allclose(weights[-1], torch.tensor(1.0))
    assert DiffusionLoss(v_scheduler, "epsilon").weights(t) is None


def test_noise_offset_shifts_whole_channels():
    scheduler = build_noise_scheduler(NoiseConfig())
    latents = torch.zeros(512, 4, 8, 8)
    plain = DiffusionLoss(scheduler, noise_offset=0.0).sample_noise(latents, torch.Generator().manual_seed(0))
    offset = DiffusionLoss(scheduler, noise_offset=0.5).sample_noise(latents, torch.Generator().manual_seed(0))
    # Per-channel means spread by the offset's scale (0.5) on top of the mean of 64 N(0,1) values.
    assert plain.mean(dim=(2, 3)).std() < 0.2 < offset.mean(dim=(2, 3)).std()


def test_shipped_configs_validate():
    for path in ("configs/diffusion/ldm_shapes.yaml", "configs/diffusion/ldm_kl_f8_256.yaml",
                 "configs/diffusion/lora_sd15.yaml", "configs/diffusion/ldm_sdxl_shapes.yaml",
                 "configs/diffusion/ldm_sdxl_1024.yaml", "configs/diffusion/lora_sdxl.yaml"):
        cfg = load_config(path)
        assert cfg.stage == "diffusion"
        assert yaml.safe_load(open(path))["stage"] == "diffusion"


def test_pooled_prompt_in_the_time_embedding_trains_and_loads_in_plain_diffusers(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    unet = {**TINY_UNET, "addition_embed_type": "text", "addition_embed_type_num_heads": 4}
    cfg = build(Config, diffusion_config(tmp_path, run, unet=unet, samples={"prompts": []}))
    module = train(cfg).module
    # The pooled prompt reaches the time embedding: another prompt moves it, and it trained.
    embeddings = module.conditioner.encode(["a red circle", "a blue square"])
    pooled = module.unet.add_embedding(embeddings.to(module.device))
    assert not torch.allclose(pooled[0], pooled[1])
    trained = {id(p) for p in module.trained_parameters()}
    assert all(id(p) in trained for p in module.unet.add_embedding.parameters())

    pipe = StableDiffusionPipeline.from_pretrained(run / "pipeline", safety_checker=None)
    assert pipe.unet.config.addition_embed_type == "text"
    image = pipe("a red circle", num_inference_steps=2, guidance_scale=4.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 16, 16, 3) and np.isfinite(image).all()


def test_pooling_heads_must_divide_the_text_width(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    unet = {**TINY_UNET, "addition_embed_type": "text", "addition_embed_type_num_heads": 5}
    cfg = build(Config, diffusion_config(tmp_path, run, unet=unet))
    refused = r"^unet.addition_embed_type_num_heads: 5 does not divide the text encoder's width 32"
    with pytest.raises(LdmError, match=refused):
        train(cfg)
