"""Textual inversion (`textual_inversion:`): a new word learned as an embedding with everything else
frozen, exported as diffusers' learned_embeds.safetensors, loaded by plain diffusers'
`load_textual_inversion` and by `ldm generate --embedding` to the same images; resumed exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from safetensors.torch import load_file, save_file
from tiny import IMAGE_SIZE, make_tiny_pipeline
from transformers import CLIPTextModel

from ldm.cli import main
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.core.layout import LEARNED_EMBEDS
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.sampling.pipeline_io import load_pipeline
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import build_module, train

TOKEN = "<pink>"
PROMPT = f"a {TOKEN} circle in the center"
STEPS, GUIDANCE = 3, 4.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("ti-base"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Shapes whose captions name the new word."""
    folder = make_shapes_dataset(tmp_path_factory.mktemp("ti-data") / "shapes", n=16, size=IMAGE_SIZE, seed=0,
                                 n_test=4)
    metadata = folder / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    metadata.write_text("".join(json.dumps({**row, "text": f"{TOKEN} {row['text']}"}) + "\n" for row in rows))
    return folder


def ti_config(run, base, shapes, **overrides) -> dict:
    config = {
        "stage": "diffusion", "run_dir": str(run), "pretrained": str(base), "cache": False,
        "textual_inversion": {"token": TOKEN, "initializer": "red", "vectors": 2},
        "data": {"source": str(shapes), "resolution": IMAGE_SIZE, "batch_size": 4},
        "train": {"max_steps": 4, "val_every_n_steps": 2, "checkpoint_every_n_steps": 2,
                  "log_every_n_steps": 1, "limit_val_batches": 1, "lr": 5e-2},
        "samples": {"prompts": [PROMPT], "seeds": [0], "steps": 2},
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def ti_run(tmp_path_factory, base, shapes):
    run = tmp_path_factory.mktemp("ti") / "run"
    config = ti_config(run, base, shapes)
    return train(build(Config, config)), config


def images_of(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def test_only_the_new_embedding_trains(ti_run, base):
    stage, _ = ti_run
    module = stage.module
    assert [name for name, p in module.named_parameters() if p.requires_grad] == ["learned_tokens.vectors"]
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    assert all(torch.equal(a, b) for a, b in zip(module.unet.state_dict().values(), unet.state_dict().values()))
    original = CLIPTextModel.from_pretrained(base / "text_encoder")
    trained = module.conditioner.text_encoder.state_dict()
    for name, weight in original.state_dict().items():
        assert torch.equal(trained[name][:len(weight)], weight), name  # the table only grew
    checkpoint = torch.load(stage.trainer.checkpoint_callback.dirpath + "/last.ckpt", weights_only=True)
    assert list(checkpoint["state_dict"]) == ["learned_tokens.vectors"]
    # The export: one tensor of 2 vectors named by the token, changed from its start ("red").
    weights = load_file(stage.export / LEARNED_EMBEDS)
    assert list(weights) == [TOKEN] and weights[TOKEN].shape == (2, original.config.hidden_size)
    red = original.get_input_embeddings().weight[module.conditioner.tokenizer("red", add_special_tokens=False)
                                                 ["input_ids"]].mean(0)
    assert (weights[TOKEN] - red).abs().max() > 1e-3


def test_plain_diffusers_loads_the_export_and_gives_ldm_generates_images(ti_run, base, tmp_path):
    stage, _ = ti_run
    plain = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    plain.load_textual_inversion(str(stage.export / LEARNED_EMBEDS))
    theirs = images_of(plain)
    ours = images_of(load_pipeline(base, embeddings=[str(stage.export / LEARNED_EMBEDS)]))
    assert np.abs(ours - theirs).max() < 1e-4
    main(["generate", str(base), PROMPT, "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--embedding", str(stage.export / LEARNED_EMBEDS), "--out", str(tmp_path / "out")])
    png = np.asarray(Image.open(tmp_path / "out" / "0000-seed0.png"), dtype=np.float32) / 255
    assert np.abs(png - theirs[0]).max() <= 1 / 255 + 1e-6
    # Without the embedding the word is spelled out of pieces: another image.
    assert np.abs(images_of(load_pipeline(base)) - theirs).max() > 1e-3


def test_resume_is_exact(ti_run, tmp_path):
    stage, config = ti_run
    step2 = next(Path(stage.trainer.checkpoint_callback.dirpath).glob("step00000002.ckpt"))
    resumed = train(build(Config, {**config, "run_dir": str(tmp_path / "run"),
                                   "train": {**config["train"], "ckpt_path": str(step2)}}))
    assert resumed.trainer.global_step == 4
    whole, split = load_file(stage.export / LEARNED_EMBEDS), load_file(resumed.export / LEARNED_EMBEDS)
    torch.testing.assert_close(whole[TOKEN], split[TOKEN], rtol=0, atol=1e-6)


def test_mistakes_are_named(tmp_path, base, shapes, capsys):
    with pytest.raises(LdmError, match="textual_inversion needs cache: false"):
        build(Config, ti_config(tmp_path, base, shapes, cache=True))
    with pytest.raises(LdmError, match="textual_inversion and lora"):
        build(Config, ti_config(tmp_path, base, shapes, lora={}))
    with pytest.raises(LdmError, match="textual_inversion: give token"):
        build(Config, ti_config(tmp_path, base, shapes, textual_inversion={"initializer": "red"}))
    with pytest.raises(LdmError, match="textual_inversion.vectors"):
        build(Config, ti_config(tmp_path, base, shapes, textual_inversion={"token": TOKEN, "vectors": 0}))
    with pytest.raises(LdmError, match="already a word"):
        build_module(build(Config, ti_config(tmp_path, base, shapes, textual_inversion={"token": "red"})))
    # --embedding: a missing file, a pickle, a file for another text encoder: one line, nothing written.
    pickle = tmp_path / "learned_embeds.bin"
    pickle.write_bytes(b"not read")
    wide = tmp_path / "wide.safetensors"
    save_file({"<wide>": torch.zeros(1, 7)}, wide)
    for path, message in ((tmp_path / "none.safetensors", "file not found"), (pickle, "not a .safetensors file"),
                          (wide, "7 wide")):
        with pytest.raises(SystemExit) as stop:
            main(["generate", str(base), PROMPT, "--embedding", str(path), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and message in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()
