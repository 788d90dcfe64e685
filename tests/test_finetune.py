"""Stage 2 from a pretrained pipeline: the pretrained start, full fine-tuning, LoRA (training, export,
loading in plain diffusers and in `ldm generate`, exact resume, the wrong base refused), and the
memory savers (gradient checkpointing, the optimizer choice). Tiny pipelines written by save_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from tiny import IMAGE_SIZE, tiny_components

from ldm.apps.generate import GenerateOptions, generate
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.sampling.lora import BASE_NOTE, LORA_WEIGHTS, LoraChoice, check_loras
from ldm.sampling.pipeline_io import export_pipeline, load_pipeline
from ldm.sampling.samplers import DEFAULT_SAMPLER, DETERMINISTIC_SAMPLER, make_sampler
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import build_datamodule, build_module, train
from ldm.stages.trainer import fit

PROMPT = "a red circle in the center"
STEPS = 3
GUIDANCE = 4.0
# A schedule unlike the defaults, to tell it was read from the pipeline.
BASE_SCHEDULE = dict(beta_schedule="scaled_linear", beta_start=0.001, beta_end=0.02,
                     prediction_type="v_prediction", timestep_spacing="trailing")


def make_base(folder, seed: int = 0):
    """A tiny pretrained pipeline as `save_pretrained` writes it, with a DPM-Solver++ scheduler."""
    parts = tiny_components(seed=seed)
    parts["scheduler"] = DPMSolverMultistepScheduler(**BASE_SCHEDULE)
    return export_pipeline(folder, **parts)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("base") / "pipeline")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "shapes"
    return make_shapes_dataset(folder, n=16, size=IMAGE_SIZE, seed=0, n_test=4)


def finetune_config(run, base, shapes, **overrides) -> dict:
    config = {
        "stage": "diffusion", "run_dir": str(run), "pretrained": str(base),
        "data": {"source": str(shapes), "resolution": IMAGE_SIZE, "batch_size": 4},
        "train": {"max_steps": 2, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                  "log_every_n_steps": 1, "limit_val_batches": 1, "lr": 1e-2},
        "samples": {"prompts": []},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    return config


def unet_weights(unet) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in unet.state_dict().items()}


def images_of(pipe, seed: int = 0, sampler: str = DEFAULT_SAMPLER) -> np.ndarray:
    """`pipe`'s image of PROMPT with `sampler` (the default: the one `ldm generate` takes)."""
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_sampler(sampler, pipe.scheduler.config)
    return pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


def plain_diffusers(base, lora=None) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    if lora is not None:
        pipe.load_lora_weights(lora)
    return pipe


# ---- pretrained start and full fine-tuning ---------------------------------------------------------

class FirstStep(Callback):
    """Keeps the UNet's weights as the first training step receives them."""

    def __init__(self):
        self.weights = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.weights is None:
            self.weights = unet_weights(pl_module.unet)


def test_pretrained_start_takes_every_part_and_the_schedule_from_the_pipeline(tmp_path, base, shapes):
    cfg = build(Config, finetune_config(tmp_path / "run", base, shapes))
    module = build_module(cfg)
    loaded = UNet2DConditionModel.from_pretrained(base / "unet")
    # The EMA starts from the loaded weights too.
    for shadow, weight in zip(module.ema.shadow_params, loaded.parameters()):
        assert torch.equal(shadow, weight)
    # Autoencoder, text encoder and schedule are the pipeline's.
    reference = plain_diffusers(base)
    for ours, theirs in ((module.autoencoder.vae, reference.vae),
                         (module.conditioner.text_encoder, reference.text_encoder)):
        pairs = zip(ours.state_dict().values(), theirs.state_dict().values())
        assert all(torch.equal(a, b) for a, b in pairs)
    assert module.noise_scheduler.config.prediction_type == "v_prediction"
    assert torch.allclose(module.noise_scheduler.betas, reference.scheduler.betas)

    first = FirstStep()
    fit(cfg, module, build_datamodule(cfg, module), callbacks=[first])
    expected = unet_weights(loaded)
    assert first.weights.keys() == expected.keys()
    assert all(torch.equal(first.weights[name], expected[name]) for name in expected)


def test_full_fine_tune_exports_a_pipeline_that_stable_diffusion_loads(tmp_path, base, shapes):
    stage = train(build(Config, finetune_config(tmp_path / "run", base, shapes)))
    assert stage.export == tmp_path / "run" / "pipeline"
    assert stage.module.ema.optimization_step == 2
    tuned = plain_diffusers(stage.export)
    assert tuned.scheduler.config.timestep_spacing == "trailing"  # the base's schedule, kept
    assert tuned.scheduler.config.prediction_type == "v_prediction"
    before = UNet2DConditionModel.from_pretrained(base / "unet").conv_in.weight
    assert not torch.equal(tuned.unet.conv_in.weight, before)  # it trained
    assert images_of(tuned).shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_unet_pretrained_alone_needs_the_other_parts_and_must_fit_them(tmp_path, base, shapes):
    config = finetune_config(tmp_path / "run", base, shapes, pretrained=None, unet={"pretrained": str(base)})
    with pytest.raises(LdmError, match="vae: say where the vae is"):
        build(Config, config)
    # An autoencoder with other latent channels than the UNet takes: named, both sides.
    vae = AutoencoderKL(latent_channels=8, block_out_channels=(8, 16), norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    vae.save_pretrained(tmp_path / "vae8")
    config.update(vae=str(tmp_path / "vae8"), text_encoder=str(base))
    with pytest.raises(LdmError, match="takes 4 latent channels, but the autoencoder of .*vae8 makes 8"):
        build_module(build(Config, config))


# ---- LoRA ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base, shapes):
    """A LoRA run of 4 steps on the base (checkpoints at steps 2 and 4)."""
    run = tmp_path_factory.mktemp("lora") / "run"
    config = finetune_config(run, base, shapes, lora={"rank": 4, "alpha": 8},
                             train={"max_steps": 4, "lr": 5e-2})
    return train(build(Config, config)), config


def test_lora_trains_and_checkpoints_only_the_adapters(lora_run, base):
    stage, _ = lora_run
    unet = stage.module.unet
    trained = [name for name, p in unet.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    # The base weights are untouched (peft keeps each wrapped layer's own as `base_layer`).
    loaded = unet_weights(UNet2DConditionModel.from_pretrained(base / "unet"))
    kept = {name.replace(".base_layer", ""): weight for name, weight in unet_weights(unet).items()
            if "lora_" not in name}
    assert kept.keys() == loaded.keys()
    assert all(torch.equal(kept[name], loaded[name]) for name in loaded)
    checkpoint = torch.load(stage.trainer.checkpoint_callback.dirpath + "/last.ckpt", weights_only=True)
    assert checkpoint["state_dict"] and all("lora_" in key for key in checkpoint["state_dict"])
    assert len(checkpoint["ema"]["shadow_params"]) == len(trained)
    # The export: diffusers' LoRA file and the note of the base.
    assert sorted(p.name for p in stage.export.iterdir()) == [BASE_NOTE, LORA_WEIGHTS]
    assert all("lora" in key for key in load_file(stage.export / LORA_WEIGHTS))


def test_lora_loads_in_plain_diffusers_and_gives_the_images_of_ldm(lora_run, base, tmp_path):
    stage, _ = lora_run
    theirs = images_of(plain_diffusers(base, lora=stage.export))
    ours = images_of(load_pipeline(base, loras=[LoraChoice(str(stage.export))]))
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.abs(theirs - images_of(plain_diffusers(base))).max() > 1e-3  # the LoRA changes the image
    # Scale 0: the base's own images.
    off = images_of(load_pipeline(base, loras=[LoraChoice(str(stage.export), 0.0)]))
    assert np.abs(off - images_of(load_pipeline(base))).max() < 1e-5

    # `ldm generate --lora` writes the diffusers image (PNG: up to rounding to 8 bits).
    from ldm.cli import main

    main(["generate", str(base), PROMPT, "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--lora", str(stage.export), "--out", str(tmp_path / "out")])
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "out" / "0000-seed0.png"), dtype=np.float32) / 255
    assert np.abs(png - theirs[0]).max() <= 1 / 255 + 1e-6


def test_lora_on_another_base_is_refused_naming_both(lora_run, base, tmp_path):
    stage, _ = lora_run
    other = make_base(tmp_path / "other", seed=1)
    with pytest.raises(LdmError, match=f"trained on {base.resolve()}, not on {other}"):
        check_loras([LoraChoice(str(stage.export))], other)
    with pytest.raises(LdmError, match="trained on"):  # before any image is made
        generate(GenerateOptions(str(other), [PROMPT], out=str(tmp_path / "out"),
                                 loras=[LoraChoice(str(stage.export))]))
    assert not (tmp_path / "out").exists()


def test_a_lora_without_its_note_that_does_not_fit_the_unet_is_refused_in_one_line(lora_run, tmp_path, capsys):
    """A LoRA folder without base_model.json (written by another tool) on a UNet of other sizes: one
    line naming the layer, not torch's size-mismatch traceback; no output folder left behind."""
    import shutil


    stage, _ = lora_run
    noteless = tmp_path / "noteless"
    noteless.mkdir()
    shutil.copy(stage.export / LORA_WEIGHTS, noteless / LORA_WEIGHTS)
    assert_refused_on_another_unet(noteless, tmp_path, capsys)


def test_animate_walks_with_the_lora(lora_run, base, tmp_path):
    """`ldm animate --lora`: the first keyframe is the LoRA's image for its prompt and seed, the
    walk's settings record the LoRA, and a walk without it is another walk."""
    import json

    from ldm.apps.animate import video
    from ldm.cli import main

    stage, _ = lora_run
    out = tmp_path / "walk"
    walk = ["animate", str(base), "--prompts", PROMPT, "a blue square", "--frames", "2",
            "--steps", str(STEPS), "--guidance", str(GUIDANCE), "--out", str(out)]
    main([*walk, "--lora", str(stage.export), "--lora-scale", "1"])
    first = video.read_frames(out / "frames", 2)[0].astype(np.float32) / 255
    ours = images_of(load_pipeline(base, loras=[LoraChoice(str(stage.export))]), sampler=DETERMINISTIC_SAMPLER)[0]
    assert np.abs(first - ours).max() <= 1 / 255 + 1e-6  # a walk samples deterministically
    saved = json.loads((out / "settings.json").read_text())
    assert saved["loras"][0]["path"] == str(stage.export.resolve()) and saved["loras"][0]["scale"] == 1.0
    with pytest.raises(SystemExit):  # the same folder without the LoRA: other settings, refused
        main(walk)


def test_lora_resume_is_exact(lora_run, tmp_path):
    """Resumed from the step-2 checkpoint (as after a kill), the adapters end as the run's own."""
    stage, config = lora_run
    step2 = next(Path(stage.trainer.checkpoint_callback.dirpath).glob("step00000002.ckpt"))
    resumed = train(build(Config, {**config, "run_dir": str(tmp_path / "run"),
                                   "train": {**config["train"], "ckpt_path": str(step2)}}))
    assert resumed.trainer.global_step == 4
    whole, split = load_file(stage.export / LORA_WEIGHTS), load_file(resumed.export / LORA_WEIGHTS)
    assert whole.keys() == split.keys()
    for key in whole:
        torch.testing.assert_close(whole[key], split[key], rtol=0, atol=1e-6)


def test_text_encoder_lora_trains_exports_and_loads_in_plain_diffusers(tmp_path, base, shapes):
    config = finetune_config(tmp_path / "run", base, shapes, cache=False,
                             lora={"rank": 4, "train_text_encoder": True}, train={"lr": 5e-2})
    stage = train(build(Config, config))
    encoder = stage.module.conditioner.text_encoder
    trained = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in name for name in trained)
    weights = load_file(stage.export / LORA_WEIGHTS)
    text_keys = [key for key in weights if key.startswith("text_encoder.")]
    up = [key for key in text_keys if ".up." in key or "lora_B" in key]  # zero at the start, so trained
    assert up and any(weights[key].abs().max() > 0 for key in up)
    theirs = images_of(plain_diffusers(base, lora=stage.export))
    ours = images_of(load_pipeline(base, loras=[LoraChoice(str(stage.export))]))
    assert np.abs(ours - theirs).max() < 1e-4


def test_lora_config_mistakes_are_named(tmp_path, base, shapes):
    without_base = finetune_config(tmp_path, base, shapes, pretrained=None, vae=str(base / "vae"),
                                   text_encoder=str(base), lora={})
    with pytest.raises(LdmError, match="lora: adapters train on top of pretrained weights"):
        build(Config, without_base)
    with pytest.raises(LdmError, match="lora.train_text_encoder needs cache: false"):
        build(Config, finetune_config(tmp_path, base, shapes, lora={"train_text_encoder": True}))
    with pytest.raises(LdmError, match="lora.target_modules: .*to_nowhere"):
        build_module(build(Config, finetune_config(tmp_path, base, shapes,
                                                   lora={"target_modules": ["to_nowhere"]})))


# ---- memory savers -------------------------------------------------------------------------------------

def loss_and_gradients(module, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One training loss on fixed images and captions, and the gradients of what trains."""
    torch.manual_seed(seed)
    batch = {"pixel_values": torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1,
             "caption": [PROMPT, "a blue square", "", "a green triangle on white"]}
    module.train()
    latents, embeddings = module.latents_and_embeddings(batch)
    loss = module.diffusion_loss(latents, embeddings, torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.trained_parameters()]


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, base, shapes):
    config = finetune_config(tmp_path, base, shapes, cache=False, lora={"train_text_encoder": True})
    plain = build_module(build(Config, config))
    saving = build_module(build(Config, finetune_config(tmp_path, base, shapes, cache=False,
                                                        lora={"train_text_encoder": True},
                                                        train={"gradient_checkpointing": True})))
    assert saving.unet.is_gradient_checkpointing and saving.text_encoder.is_gradient_checkpointing
    assert not plain.unet.is_gradient_checkpointing
    saving.load_state_dict(plain.state_dict())  # the same LoRA initialisation
    loss, grads = loss_and_gradients(plain)
    loss_saving, grads_saving = loss_and_gradients(saving)
    torch.testing.assert_close(loss_saving, loss)
    assert len(grads) == len(grads_saving) > 0
    for a, b in zip(grads, grads_saving):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_adafactor_trains_and_a_missing_optimizer_package_is_named(tmp_path, base, shapes):
    stage = train(build(Config, finetune_config(tmp_path / "run", base, shapes,
                                                train={"optimizer": "adafactor"})))
    from transformers.optimization import Adafactor

    assert isinstance(stage.trainer.optimizers[0], Adafactor)
    before = UNet2DConditionModel.from_pretrained(base / "unet").conv_in.weight
    assert not torch.equal(stage.module.unet.conv_in.weight.cpu(), before)

    from ldm.stages.optimizers import build_optimizer

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(LdmError, match="adamw8bit needs the bitsandbytes package"):
            build_optimizer([torch.nn.Parameter(torch.zeros(2))], "adamw8bit", lr=1e-3, weight_decay=0.0)


def assert_refused_on_another_unet(adapter: Path, tmp_path: Path, capsys) -> None:
    """`ldm generate --lora adapter` on a pipeline whose UNet has other sizes: one line saying it does not
    fit, no traceback, no output folder left behind."""
    from ldm.cli import main

    parts = tiny_components()
    parts["unet"] = UNet2DConditionModel.from_config({**parts["unet"].config, "block_out_channels": (8, 16)})
    other = export_pipeline(tmp_path / "other", **parts)
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(other), PROMPT, "--steps", "2", "--lora", str(adapter), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert "does not fit this pipeline's UNet" in err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()
