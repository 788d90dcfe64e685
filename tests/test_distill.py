"""Latent consistency distillation (issue 34): `ldm train` a tiny teacher pipeline into a few-step
student (whole UNet with a guidance-scale input, and an LCM-LoRA), exported as diffusers loads it;
`ldm generate` and `ldm animate` on the distilled pipeline; exact resume. Tiny pipelines, CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file
from tiny import IMAGE_SIZE, tiny_components

from ldm.apps.generate import GenerateOptions, generate
from ldm.cli import main
from ldm.core.errors import LdmError
from ldm.core.images import read_png_metadata
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.sampling.lora import LORA_WEIGHTS
from ldm.sampling.pipeline_io import export_pipeline
from ldm.sampling.samplers import consistency_scheduler
from ldm.stages.diffusion.config import NoiseConfig
from ldm.stages.diffusion.parts import build_noise_scheduler
from ldm.stages.distill.consistency import SkippingDDIMSolver
from ldm.stages.registry import load_config

PROMPT = "a red circle in the center"
STEPS = 4
GUIDANCE = 4.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny v-prediction pipeline as the diffusion stage exports one (DPM-Solver++ scheduler)."""
    parts = tiny_components()
    parts["scheduler"] = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    return export_pipeline(tmp_path_factory.mktemp("teacher") / "pipeline", **parts)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=16, size=IMAGE_SIZE, seed=0, n_test=4)


def distill_config(path: Path, teacher: Path, shapes: Path, **overrides) -> Path:
    config = {
        "stage": "distill", "run_dir": str(path.parent / "run"), "teacher": str(teacher),
        "data": {"source": str(shapes), "resolution": IMAGE_SIZE, "batch_size": 4},
        "consistency": {"guidance_min": 2.0, "guidance_max": 6.0, "guidance_embedding_dim": 16},
        "train": {"max_steps": 4, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                  "log_every_n_steps": 1, "limit_val_batches": 1, "lr": 1e-2},
        "samples": {"prompts": [PROMPT], "seeds": [0, 1], "steps": 2},
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def diffusers_image(pipe: StableDiffusionPipeline, steps: int, guidance: float, seed: int = 0) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images[0]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, teacher, shapes):
    """`ldm train` of a whole-UNet student, 4 steps (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("distill")
    config = distill_config(root / "lcm.yaml", teacher, shapes)
    main(["train", str(config)])
    return root / "run", config


def test_the_solver_steps_on_the_lcm_samplers_grid():
    training = build_noise_scheduler(NoiseConfig())
    sampler = consistency_scheduler(training, original_steps=50, timestep_scaling=10.0)
    sampler.set_timesteps(50)
    solver = SkippingDDIMSolver(training, 50)
    assert sorted(sampler.timesteps.tolist()) == solver.timesteps.tolist()
    start, end = solver.draw(64, "cpu", torch.Generator().manual_seed(0))
    assert set(start.tolist()) <= set(solver.timesteps.tolist())
    assert torch.equal(end, (start - 20).clamp(min=0))


def test_distilled_pipeline_loads_in_plain_diffusers_and_matches_ldm_generate(distilled, teacher, tmp_path):
    run, _ = distilled
    export = run / "pipeline"
    pipe = StableDiffusionPipeline.from_pretrained(export, safety_checker=None)
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert pipe.unet.config.time_cond_proj_dim == 16  # the guidance scale is an input
    # The student moved away from the teacher (its copy), and its guidance input learnt something.
    student, original = pipe.unet.state_dict(), UNet2DConditionModel.from_pretrained(teacher / "unet").state_dict()
    assert any(not torch.equal(student[name], original[name]) for name in original)
    assert student["time_embedding.cond_proj.weight"].abs().max() > 0
    theirs = diffusers_image(pipe, STEPS, GUIDANCE)
    assert np.isfinite(theirs).all()

    main(["generate", str(export), PROMPT, "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--out", str(tmp_path / "out")])
    ours = tmp_path / "out" / "0000-seed0.png"
    assert np.abs(png(ours) - theirs).max() <= 1 / 255 + 1e-6
    assert read_png_metadata(ours)["sampler"] == "lcm"  # the distilled pipeline's own sampler by default
    with pytest.raises(LdmError, match="--negative has no effect"):
        generate(GenerateOptions(str(export), [PROMPT], negative="blue", out=str(tmp_path / "neg")))
    # Guidance is an input: another scale gives another image, in one UNet pass a step.
    assert np.abs(diffusers_image(pipe, STEPS, 1.5) - theirs).max() > 1e-4
    # The run's parts: validation grids drawn with the LCM sampler, checkpoints holding the target network.
    assert read_png_metadata(sorted((run / "distill" / "samples").glob("*.png"))[-1])["scheduler"] == "LCMScheduler"
    checkpoint = torch.load(run / "distill" / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(key.startswith("target.") for key in checkpoint["state_dict"])
    assert not any(key.startswith("teacher.") for key in checkpoint["state_dict"])  # frozen: put back on resume


def test_a_killed_distillation_resumes_exactly(distilled, tmp_path):
    """Resumed from the step-2 checkpoint (as after a kill), the student ends as the run's own."""
    run, config = distilled
    step2 = run / "distill" / "checkpoints" / "step00000002.ckpt"
    main(["train", str(config), f"run_dir={tmp_path / 'run'}", f"train.ckpt_path={step2}"])
    whole = load_file(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    split = load_file(tmp_path / "run" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert whole.keys() == split.keys()
    for key in whole:
        torch.testing.assert_close(whole[key], split[key], rtol=0, atol=1e-6)


def test_walks_on_the_distilled_pipeline_take_its_deterministic_sampler(distilled, tmp_path):
    run, _ = distilled
    out = tmp_path / "walk"
    main(["animate", str(run / "pipeline"), "--prompts", PROMPT, "a blue square", "--frames", "3",
          "--steps", "2", "--out", str(out)])
    assert json.loads((out / "settings.json").read_text())["sampler"] == "tcd"
    assert len(list((out / "frames").glob("*.png"))) == 3


def test_lcm_lora_loads_onto_the_teacher(tmp_path, teacher, shapes):
    config = distill_config(tmp_path / "lora.yaml", teacher, shapes, lora={"rank": 4},
                            samples={"prompts": []})
    main(["train", str(config), "train.max_steps=2"])
    lora = tmp_path / "run" / "lora"
    assert (lora / LORA_WEIGHTS).is_file()
    base = StableDiffusionPipeline.from_pretrained(teacher, safety_checker=None)
    base.scheduler = LCMScheduler.from_config(base.scheduler.config)
    plain = diffusers_image(base, 2, 1.0)
    base.load_lora_weights(lora)
    theirs = diffusers_image(base, 2, 1.0)
    assert np.abs(theirs - plain).max() > 1e-4  # the adapters change the image

    main(["generate", str(teacher), PROMPT, "--lora", str(lora), "--sampler", "lcm", "--steps", "2",
          "--guidance", "1", "--out", str(tmp_path / "out")])
    assert np.abs(png(tmp_path / "out" / "0000-seed0.png") - theirs).max() <= 1 / 255 + 1e-6


def test_config_mistakes_are_named_before_any_model_loads(tmp_path, teacher, shapes):
    config = distill_config(tmp_path / "c.yaml", teacher, shapes)
    with pytest.raises(LdmError, match="would replace the teacher"):
        load_config(config, [f"run_dir={teacher.parent}"])
    with pytest.raises(LdmError, match="consistency.guidance_max .* must be at least consistency.guidance_min"):
        load_config(config, ["consistency.guidance_max=1.5"])
    with pytest.raises(LdmError, match="consistency.solver_steps"):
        load_config(config, ["consistency.solver_steps=1"])
