"""DoRA, LoHa and LoKr beside LoRA (`lora.kind`): each trains only its own parameters, checkpoints
only them, resumes exactly, and its export gives the trained adapters' images: DoRA through plain
diffusers' `load_lora_weights`, LoHa and LoKr (a peft adapter folder) through `ldm generate --lora`
and `ldm animate --lora`. Tiny pipelines written by save_pretrained (tests/test_finetune.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from finetune_fixtures import base_fixture, shapes_fixture  # noqa: F401 (pytest fixtures base, shapes)
from PIL import Image
from safetensors.torch import load_file
from test_finetune import (
    GUIDANCE,
    PROMPT,
    STEPS,
    assert_refused_on_another_unet,
    finetune_config,
    images_of,
    plain_diffusers,
)

from ldm.cli import main
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.sampling.lora import BASE_NOTE, LORA_WEIGHTS, LoraChoice
from ldm.sampling.peft_adapter import PEFT_CONFIG, PEFT_WEIGHTS
from ldm.sampling.pipeline_io import load_pipeline
from ldm.sampling.samplers import DETERMINISTIC_SAMPLER
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import build_module, train

# What each kind's trained parameters are called in peft.
MARKERS = {"dora": ("lora_A", "lora_B", "lora_magnitude_vector"), "loha": ("hada_",), "lokr": ("lokr_",)}
EXPORTS = {"dora": [BASE_NOTE, LORA_WEIGHTS], "loha": [PEFT_CONFIG, PEFT_WEIGHTS, BASE_NOTE],
           "lokr": [PEFT_CONFIG, PEFT_WEIGHTS, BASE_NOTE]}


def adapter_config(run, base, shapes, kind: str) -> dict:
    return finetune_config(run, base, shapes, lora={"kind": kind, "rank": 4, "alpha": 8},
                           train={"max_steps": 4, "lr": 5e-2})


@pytest.fixture(scope="module", params=["dora", "loha", "lokr"])
def adapter_run(request, tmp_path_factory, base, shapes):
    """An adapter run of 4 steps through `ldm train` (checkpoints at steps 2 and 4), and its module
    as `train` leaves it (built again and loaded from the final checkpoint)."""
    kind = request.param
    folder = tmp_path_factory.mktemp(kind)
    config = adapter_config(folder / "run", base, shapes, kind)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["train", str(path)])
    return kind, config, folder / "run"


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "diffusion" / "checkpoints" / "last.ckpt", weights_only=True)


def trained_module(config: dict, run: Path):
    """The run's module with the weights of its last checkpoint (the EMA as it ended)."""
    module = build_module(build(Config, config))
    checkpoint = last_checkpoint(run)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module


def test_each_kind_trains_and_checkpoints_only_its_own_parameters(adapter_run, base):
    kind, config, run = adapter_run
    module = trained_module(config, run)
    trained = [name for name, p in module.unet.named_parameters() if p.requires_grad]
    assert trained and all(any(marker in name for marker in MARKERS[kind]) for name in trained)
    if kind == "dora":
        assert any("lora_magnitude_vector" in name for name in trained)  # DoRA's magnitudes train
    # The base weights are untouched (peft keeps each wrapped layer's own as `base_layer`).
    loaded = UNet2DConditionModel.from_pretrained(base / "unet").state_dict()
    kept = {name.replace(".base_layer", ""): weight for name, weight in module.unet.state_dict().items()
            if not any(marker in name for marker in MARKERS[kind])}
    assert kept.keys() == loaded.keys()
    assert all(torch.equal(kept[name], loaded[name]) for name in loaded)
    checkpoint = last_checkpoint(run)
    assert checkpoint["state_dict"].keys() == {f"unet.{name}" for name in trained}
    assert len(checkpoint["ema"]["shadow_params"]) == len(trained)
    assert sorted(p.name for p in (run / "lora").iterdir()) == sorted(EXPORTS[kind])


def test_each_kind_resumes_exactly(adapter_run, tmp_path):
    """Resumed from the step-2 checkpoint (as after a kill), the export equals the run's own."""
    kind, config, run = adapter_run
    step2 = run / "diffusion" / "checkpoints" / "step00000002.ckpt"
    resumed = train(build(Config, {**config, "run_dir": str(tmp_path / "run"),
                                   "train": {**config["train"], "ckpt_path": str(step2)}}))
    assert resumed.trainer.global_step == 4
    name = LORA_WEIGHTS if kind == "dora" else PEFT_WEIGHTS
    whole, split = load_file(run / "lora" / name), load_file(resumed.export / name)
    assert whole.keys() == split.keys()
    for key in whole:
        torch.testing.assert_close(whole[key], split[key], rtol=0, atol=1e-6)


def generated_png(base, lora: Path, out: Path) -> np.ndarray:
    main(["generate", str(base), PROMPT, "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--lora", str(lora), "--out", str(out)])
    return np.asarray(Image.open(out / "0000-seed0.png"), dtype=np.float32) / 255


def test_each_export_gives_the_trained_adapters_images(adapter_run, base, tmp_path):
    """The images of the trained UNet itself (its EMA weights, in a plain diffusers pipeline) are
    those of `ldm generate --lora` with the export, and for DoRA those of plain diffusers'
    `load_lora_weights` too; they differ from the base's."""
    kind, config, run = adapter_run
    module = trained_module(config, run)
    with module.ema_weights():
        pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
        pipe.unet = module.unet.eval()
        trained = images_of(pipe)[0]
    png = generated_png(base, run / "lora", tmp_path / "out")
    assert np.abs(png - trained).max() <= 1 / 255 + 1e-5
    assert np.abs(trained - images_of(plain_diffusers(base))[0]).max() > 1e-3  # the adapter changes the image
    if kind == "dora":
        theirs = images_of(plain_diffusers(base, lora=run / "lora"))[0]
        assert np.abs(theirs - trained).max() < 1e-4
    # Scale 0: the base's own images; not with DoRA, whose scale (diffusers' and peft's) weighs the
    # low-rank direction only, while its trained magnitudes stay (README).
    off = images_of(load_pipeline(base, loras=[LoraChoice(str(run / "lora"), 0.0)]))
    assert (np.abs(off - images_of(load_pipeline(base))).max() < 1e-5) == (kind != "dora")


def test_a_peft_adapter_walks_with_ldm_animate(adapter_run, base, tmp_path):
    kind, _, run = adapter_run
    if kind == "dora":
        pytest.skip("DoRA loads through diffusers' LoRA loader, tested with LoRA in test_finetune.py")
    from ldm.apps.animate import video

    out = tmp_path / "walk"
    main(["animate", str(base), "--prompts", PROMPT, "a blue square", "--frames", "2", "--steps", str(STEPS),
          "--guidance", str(GUIDANCE), "--out", str(out), "--lora", str(run / "lora")])
    first = video.read_frames(out / "frames", 2)[0].astype(np.float32) / 255
    ours = images_of(load_pipeline(base, loras=[LoraChoice(str(run / "lora"))]), sampler=DETERMINISTIC_SAMPLER)[0]
    assert np.abs(first - ours).max() <= 1 / 255 + 1e-6  # a walk samples deterministically


def test_a_peft_adapter_that_does_not_fit_is_refused_in_one_line(adapter_run, tmp_path, capsys):
    kind, _, run = adapter_run
    if kind == "dora":
        pytest.skip("diffusers' LoRA format is checked by check_fits (test_finetune.py)")
    import shutil

    noteless = tmp_path / "noteless"
    shutil.copytree(run / "lora", noteless)
    (noteless / BASE_NOTE).unlink()
    assert_refused_on_another_unet(noteless, tmp_path, capsys)


@pytest.mark.parametrize("lora, message", [
    ({"kind": "loha", "dropout": 0.1}, "lora.dropout is for lora.kind lora and dora; loha takes lora.rank_dropout"),
    ({"kind": "dora", "rank_dropout": 0.1}, "lora.rank_dropout is an option of lora.kind loha and lokr, not of dora"),
    ({"kind": "loha", "decompose_both": True}, "lora.decompose_both is an option of lora.kind lokr, not of loha"),
    ({"kind": "lokr", "train_text_encoder": True}, "lora.train_text_encoder works with lora.kind lora and dora"),
    ({"kind": "lokr", "decompose_factor": 0}, "lora.decompose_factor must be -1"),
    ({"kind": "boft"}, "lora.kind"),
    ({"kind": "loha", "module_dropout": 1}, "lora.module_dropout"),
])
def test_adapter_options_of_another_kind_are_refused_naming_the_key(tmp_path, base, shapes, lora, message):
    with pytest.raises(LdmError, match=message):
        build(Config, finetune_config(tmp_path, base, shapes, cache=False, lora=lora))


def test_lycoris_options_reach_peft(tmp_path, base, shapes):
    module = build_module(build(Config, finetune_config(tmp_path, base, shapes, lora={
        "kind": "lokr", "rank": 2, "decompose_both": True, "decompose_factor": 4, "module_dropout": 0.25})))
    config = module.unet.peft_config["default"]
    assert (config.r, config.decompose_both, config.decompose_factor, config.module_dropout) == (2, True, 4, 0.25)
