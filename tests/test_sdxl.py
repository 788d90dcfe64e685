"""SDXL-style models (issue 31): two text encoders, pooled embedding and size conditioning. Tiny SDXL
pipeline folders written by save_pretrained (tests/tiny.py), trained and used through the CLI:
exports load in plain diffusers' StableDiffusionXLPipeline and give `ldm generate`'s images, a
pretrained start begins from the loaded UNet, LoRA exports load with `load_lora_weights`, and the
micro-conditioning reaches the UNet; long prompts (prompt_chunks) are read window by window by
both encoders, as kohya's sd-scripts and compel read them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
from lightning.pytorch.callbacks import Callback
from PIL import Image
from test_finetune import finetune_config
from tiny import IMAGE_SIZE, TINY_SDXL_UNET, make_tiny_sdxl_pipeline

from ldm.cli import main
from ldm.components.clip import clip_text_features, load_clip
from ldm.components.dual_text_encoder import TextTimeConditioner
from ldm.components.prompt_tokens import tokenize_chunks
from ldm.components.text_time import TIME_IDS, pooled_width, unpack
from ldm.core.config import build
from ldm.core.errors import LdmError
from ldm.data.latent_cache.layout import TIME_IDS as TIME_IDS_COLUMN
from ldm.data.latent_cache.read import CachePart, load_cache
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.sampling.pipeline_io import load_pipeline
from ldm.stages.diffusion.config import Config
from ldm.stages.diffusion.train import build_datamodule, build_module
from ldm.stages.trainer import fit

PROMPT = "a red circle in the center"
STEPS, GUIDANCE, SEED = 3, 4.0, 5


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return make_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", n=16, size=IMAGE_SIZE, seed=0, n_test=4)


def diffusers_images(folder, lora=None, **call) -> np.ndarray:
    pipe = StableDiffusionXLPipeline.from_pretrained(folder)
    if lora is not None:
        pipe.load_lora_weights(lora)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                generator=torch.Generator().manual_seed(SEED), **call).images


def generated_png(folder, out, *extra) -> np.ndarray:
    main(["generate", str(folder), PROMPT, "--steps", str(STEPS), "--guidance", str(GUIDANCE), "--seed", str(SEED),
          "--out", str(out), *extra])
    return np.asarray(Image.open(out / f"0000-seed{SEED}.png"), dtype=np.float32) / 255


def assert_same_image(png: np.ndarray, reference: np.ndarray) -> None:
    assert np.abs(png - reference[0]).max() <= 1 / 255 + 1e-6  # PNG: up to rounding to 8 bits


def test_ldm_generate_gives_the_images_of_plain_diffusers(sdxl, tmp_path):
    assert_same_image(generated_png(sdxl, tmp_path / "out"), diffusers_images(sdxl))


def test_micro_conditioning_reaches_the_unet(sdxl):
    pipe = load_pipeline(sdxl)
    pipe.set_progress_bar_config(disable=True)

    def image(**sizes):
        return pipe(PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np",
                    generator=torch.Generator().manual_seed(SEED), **sizes).images

    plain = image()
    assert np.abs(image(original_size=(64, 32)) - plain).max() > 1e-3
    assert np.abs(image(crops_coords_top_left=(4, 0)) - plain).max() > 1e-3
    # the same arguments give diffusers' image
    assert np.abs(image(original_size=(64, 32)) - diffusers_images(sdxl, original_size=(64, 32))).max() < 1e-4


def sdxl_config(run, base, shapes, **overrides) -> dict:
    """The fine-tuning tests' config (tests/test_finetune.py) from `base`, with a sample grid."""
    return finetune_config(run, base, shapes, samples={"prompts": [PROMPT], "seeds": [0], "steps": 2}, **overrides)


SHORT_RUN = ["train.max_steps=2", "train.warmup_steps=0", "train.val_every_n_steps=2",
             "train.checkpoint_every_n_steps=2", "train.limit_val_batches=1"]


def pretrained_start(base, run, shapes) -> list[str]:
    """`ldm train` overrides for a start from the pipeline `base`, on the tiny shapes data."""
    return [f"pretrained={base}", "vae=null", "text_encoder=null", "noise=null", f"run_dir={run}",
            f"data.source={shapes}", f"data.resolution={IMAGE_SIZE}", "data.batch_size=4"]


class FirstStep(Callback):
    """The UNet's weights and the batch as the first training step receives them."""

    def __init__(self):
        self.weights = self.batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in pl_module.unet.state_dict().items()}
            self.batch = batch


def test_pretrained_start_begins_from_the_loaded_unet_with_the_images_time_ids(sdxl, shapes, tmp_path):
    cfg = build(Config, sdxl_config(tmp_path / "run", sdxl, shapes))
    module = build_module(cfg)
    first = FirstStep()
    fit(cfg, module, build_datamodule(cfg, module), callbacks=[first])
    loaded = UNet2DConditionModel.from_pretrained(sdxl / "unet").state_dict()
    assert all(torch.equal(first.weights[name], loaded[name]) for name in loaded)
    # the cache holds each image's (original size, crop, target size): the shapes are square, 16 px
    times = first.batch[TIME_IDS_COLUMN]
    assert times.shape == (4, TIME_IDS) and torch.equal(times[0], torch.tensor([16.0, 16, 0, 0, 16, 16]))
    # caption dropout zeroes hidden states and pooled embedding together (SDXL's unconditional input)
    module.conditioner.dropout = 0.999
    zeros = module.conditioner.drop_captions(module.conditioner.encode(["a red circle"]))
    hidden, pooled = unpack(zeros, module.conditioner.pooled_size)
    assert not hidden.any() and not pooled.any()


def test_full_fine_tune_exports_an_sdxl_pipeline_that_gives_ldm_generates_images(sdxl, shapes, tmp_path):
    run = tmp_path / "run"
    main(["train", "diffusion/ldm_shapes.yaml", *pretrained_start(sdxl, run, shapes), *SHORT_RUN, "samples.steps=2",
          "samples.seeds=[0]"])
    export = run / "pipeline"
    tuned = UNet2DConditionModel.from_pretrained(export / "unet")
    assert tuned.config.addition_embed_type == "text_time"
    assert not torch.equal(tuned.conv_in.weight, UNet2DConditionModel.from_pretrained(sdxl / "unet").conv_in.weight)
    assert (run / "diffusion" / "samples").is_dir()
    assert_same_image(generated_png(export, tmp_path / "out"), diffusers_images(export))


def test_lora_export_loads_in_plain_diffusers_and_gives_ldm_generates_images(sdxl, shapes, tmp_path):
    run = tmp_path / "run"
    main(["train", "diffusion/ldm_shapes.yaml", *pretrained_start(sdxl, run, shapes), *SHORT_RUN, "lora.rank=4",
          "train.lr=0.05", "train.max_steps=3", "samples.prompts=[]"])
    lora = run / "lora"
    theirs = diffusers_images(sdxl, lora=lora)
    assert np.abs(theirs - diffusers_images(sdxl)).max() > 1e-3  # the LoRA changes the image
    assert_same_image(generated_png(sdxl, tmp_path / "out", "--lora", str(lora)), theirs)


def test_trains_from_scratch_on_the_clip_stage_and_exports_an_sdxl_pipeline(make_stage1_run, tmp_path):
    run = make_stage1_run(tmp_path)
    tiny_unet = [f"unet.{key}={json.dumps(value)}" for key, value in TINY_SDXL_UNET.items()]
    main(["train", "diffusion/ldm_sdxl_shapes.yaml", f"run_dir={run}", f"vae={run / 'vae'}", f"text_encoder={run}",
          f"data.source={tmp_path / 'shapes'}", f"data.resolution={IMAGE_SIZE}", "data.batch_size=4", *tiny_unet,
          *SHORT_RUN, "samples.steps=2", "samples.seeds=[0]"])
    export = run / "pipeline"
    assert not (export / "text_encoder").exists() and (export / "text_encoder_2").is_dir()
    # its one encoder is the CLIP stage's text tower with the CLIP's projection: the pooled
    # embedding is the CLIP's text feature
    conditioner = TextTimeConditioner.load(str(run))
    clip, processor = load_clip(run / "clip")
    _, pooled = unpack(conditioner.encode([PROMPT]), conditioner.pooled_size)
    expected = clip_text_features(clip, processor.tokenizer, [PROMPT])
    assert torch.allclose(torch.nn.functional.normalize(pooled, dim=-1), expected, atol=1e-5)
    assert_same_image(generated_png(export, tmp_path / "out"), diffusers_images(export))


# ---- long prompts (prompt_chunks): each encoder reads each window, the pooled rows stay last ----------

LONG = " ".join(["a red circle"] * 50)  # 150 tokens of the tiny tokenizer: two windows of 75
WINDOW = 77


def window_states(pipe, text: str) -> torch.Tensor:
    """One window's SDXL hidden states: each encoder's penultimate layer, side by side."""
    return torch.cat([encoder(tokenize_chunks(tokenizer, [text])[0], output_hidden_states=True).hidden_states[-2]
                      for tokenizer, encoder in pipe.encoders], dim=-1)[0]


@torch.no_grad()
def test_long_prompts_are_each_encoders_windows_with_the_first_windows_pooled_embedding_last(sdxl, tmp_path):
    pipe = load_pipeline(sdxl, prompt_chunks=2)
    packed = pipe.embed_prompts([LONG, "a red circle"])
    hidden, pooled = unpack(packed, pooled_width(pipe.unet))
    assert hidden.shape[1] == 2 * WINDOW and packed.shape[1] == 2 * WINDOW + pipe.tail_rows
    first, second = " ".join(LONG.split()[:75]), " ".join(LONG.split()[75:])
    torch.testing.assert_close(hidden[0], torch.cat([window_states(pipe, first), window_states(pipe, second)]),
                               rtol=0, atol=1e-5)
    # a short prompt beside it: its window, then the empty prompt's (compel's padding); its own pooled
    torch.testing.assert_close(hidden[1], torch.cat([window_states(pipe, "a red circle"), window_states(pipe, "")]),
                               rtol=0, atol=1e-5)
    first_pooled = pipe.text_encoder_2(tokenize_chunks(pipe.tokenizer_2, [first])[0]).text_embeds
    torch.testing.assert_close(pooled[0], first_pooled[0], rtol=0, atol=1e-5)
    # ldm generate's image is plain diffusers' given the same embeddings (its negative: zeros as long)
    main(["generate", str(sdxl), LONG, "--prompt-chunks", "2", "--steps", str(STEPS), "--guidance", str(GUIDANCE),
          "--seed", str(SEED), "--out", str(tmp_path / "out")])
    png = np.asarray(Image.open(tmp_path / "out" / f"0000-seed{SEED}.png"), dtype=np.float32) / 255
    theirs = StableDiffusionXLPipeline.from_pretrained(sdxl)
    theirs.set_progress_bar_config(disable=True)
    reference = theirs(prompt_embeds=hidden[:1], pooled_prompt_embeds=pooled[:1], num_inference_steps=STEPS,
                       guidance_scale=GUIDANCE, output_type="np", generator=torch.Generator().manual_seed(SEED)).images
    assert_same_image(png, reference)


def test_long_captions_train_from_the_cache_cut_to_the_batchs_longest_with_the_pooled_rows_last(sdxl, tmp_path):
    shapes = make_shapes_dataset(tmp_path / "shapes", n=16, size=IMAGE_SIZE, seed=0, n_test=4)
    metadata = shapes / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    for i, row in enumerate(rows):  # half the captions long: training batches mix lengths
        row["text"] = (LONG + " " + row["text"]) if i % 2 else row["text"]
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = build(Config, sdxl_config(tmp_path / "run", sdxl, shapes, prompt_chunks=3))
    module = build_module(cfg)
    datamodule = build_datamodule(cfg, module)
    fit(cfg, module, datamodule)
    (part,) = load_cache(datamodule.cache_folder())
    columns, captions = CachePart(part), [texts[0] for texts in part["captions"]]
    short = np.array([i for i, caption in enumerate(captions) if not caption.startswith(LONG)])
    for batch_rows, windows in ((np.arange(len(part)), 3), (short, 1)):  # LONG + caption: 3 windows
        cached = columns.batch(batch_rows, None)["embeddings"]
        assert cached.shape[1] == windows * WINDOW + module.conditioner.tail_rows
        encoded = module.conditioner.encode([captions[i] for i in batch_rows]).float()
        torch.testing.assert_close(cached, encoded, rtol=1e-2, atol=1e-2)  # float16 in the cache


def test_what_sdxl_models_do_not_take_yet_is_one_line(sdxl, shapes, tmp_path, capsys):
    new_unet = {"pretrained": None, "vae": str(sdxl / "vae"), "text_encoder": str(sdxl), "unet": TINY_SDXL_UNET}
    with pytest.raises(LdmError, match="inpainting: an SDXL-style UNet"):
        build(Config, sdxl_config(tmp_path, None, shapes, inpainting={}, **new_unet))
    with pytest.raises(LdmError, match="textual_inversion: the UNet of .* is SDXL-style"):
        build_module(build(Config, sdxl_config(tmp_path, sdxl, shapes, cache=False,
                                               textual_inversion={"token": "<pink>"})))
    commands = [["generate", str(sdxl), "a red circle", "--embedding", str(tmp_path / "pink.safetensors"),
                 "--out", str(tmp_path / "out")],
                ["train", "distill/lcm_shapes.yaml", f"teacher={sdxl}", f"data.source={shapes}",
                 f"run_dir={tmp_path / 'lcm'}"]]
    for command, message in zip(commands, ("is an SDXL pipeline; textual-inversion embeddings",
                                           "is an SDXL pipeline; latent consistency distillation")):
        with pytest.raises(SystemExit) as stop:
            main(command)
        err = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and len(err.splitlines()) == 1 and message in err
