"""Prompts longer than the text encoder's 77 tokens: encoded in windows of 75 and concatenated
(`prompt_chunks`), in `ldm generate`, walks, guidance and training (the latent cache keys on it);
over the limit, one line. Tiny pipelines and shapes data, on the CPU."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline
from diffusion_fixtures import diffusion_config
from PIL import Image
from tiny import make_tiny_pipeline

from ldm.cli import main
from ldm.components.autoencoder import FrozenAutoencoder
from ldm.components.prompt_tokens import chunk_counts, tokenize_chunks
from ldm.components.text_encoder import TextConditioner, embed_prompts, encode_prompts
from ldm.core.errors import LdmError
from ldm.data.config import DataConfig
from ldm.data.latent_datamodule import LatentCacheDataModule
from ldm.sampling.pipeline_io import PROMPT_CHUNKS, load_pipeline

# 150 tokens of the tiny tokenizer (each word one token): two windows of 75.
LONG = " ".join(["a red circle"] * 50)
CHANGED_END = LONG.rsplit(" ", 2)[0] + " blue square"  # the same but its last two tokens
WINDOW = 77


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("long"))


@pytest.fixture(scope="module")
def pipe(pipeline):
    return load_pipeline(pipeline)


def png(folder, name="0000-seed3.png") -> np.ndarray:
    return np.asarray(Image.open(folder / name), dtype=np.float32)


def test_the_prompt_is_150_tokens(pipe):
    assert chunk_counts(pipe.tokenizer, [LONG, CHANGED_END, "a red circle", ""], 3) == [2, 2, 1, 1]
    assert len(pipe.tokenizer(LONG, add_special_tokens=False)["input_ids"]) == 150


def test_windows_concatenate_and_short_prompts_are_as_before(pipe):
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    short = ["a red circle", ""]
    one = encode_prompts(tokenizer, encoder, short)
    # A batch of one-window prompts: what the tokenizer and encoder give, whatever the limit.
    ids = tokenizer(short, padding="max_length", max_length=WINDOW, return_tensors="pt")["input_ids"]
    assert torch.equal(tokenize_chunks(tokenizer, short, 3)[0], ids[:1])
    torch.testing.assert_close(one, encoder(input_ids=ids).last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(encode_prompts(tokenizer, encoder, short, max_chunks=3), one, rtol=0, atol=1e-6)
    # A long prompt: its windows side by side; a short one beside it padded with the empty window.
    both, pooled = embed_prompts(tokenizer, encoder, [LONG, "a red circle"], max_chunks=2, pooled=True)
    assert both.shape == (2, 2 * WINDOW, encoder.config.hidden_size)
    first_half = " ".join(LONG.split()[:75])
    second_half = " ".join(LONG.split()[75:])
    halves = encode_prompts(tokenizer, encoder, [first_half, second_half])
    torch.testing.assert_close(both[0], halves.flatten(0, 1), rtol=0, atol=1e-5)
    torch.testing.assert_close(both[1, :WINDOW], one[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both[1, WINDOW:], one[1], rtol=0, atol=1e-5)
    # The pooled embedding is the first window's (diffusers' and compel's convention).
    first_pooled = encoder(input_ids=tokenize_chunks(tokenizer, [first_half])[0]).pooler_output
    torch.testing.assert_close(pooled[0], first_pooled[0], rtol=0, atol=1e-5)


def test_one_window_cuts_with_a_warning_and_more_refuse_in_one_line(pipe):
    with pytest.warns(UserWarning, match="cut off .*prompt_chunks"):
        cut = encode_prompts(pipe.tokenizer, pipe.text_encoder, [LONG])
    assert cut.shape[1] == WINDOW
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompts(pipe.tokenizer, pipe.text_encoder, [LONG], max_chunks=2)
    with pytest.raises(LdmError, match=r"longer than 2 windows of 75 tokens \(150 tokens, prompt_chunks: 2\)"):
        encode_prompts(pipe.tokenizer, pipe.text_encoder, [LONG + " " + LONG], max_chunks=2)


def test_generate_reads_the_end_of_a_150_token_prompt(pipeline, tmp_path):
    """Two prompts that differ only in their last tokens: one window cannot tell them apart (the end is
    cut), two windows can; with guidance, the negative is padded to the long prompt's length."""
    common = ["--steps", "2", "--guidance", "3", "--seed", "3"]
    for chunks in ("1", "2"):
        for name, prompt in (("long", LONG), ("changed", CHANGED_END)):
            main(["generate", str(pipeline), prompt, *common, "--prompt-chunks", chunks,
                  "--out", str(tmp_path / f"{name}{chunks}")])
    assert np.array_equal(png(tmp_path / "long1"), png(tmp_path / "changed1"))
    assert np.abs(png(tmp_path / "long2") - png(tmp_path / "changed2")).max() > 0
    # An image does not depend on the other prompts of its batch: a short prompt generated beside
    # the long one is the short prompt's image alone.
    main(["generate", str(pipeline), "a red circle", LONG, *common, "--prompt-chunks", "2",
          "--out", str(tmp_path / "both")])
    main(["generate", str(pipeline), "a red circle", *common, "--out", str(tmp_path / "alone")])
    assert np.array_equal(png(tmp_path / "both"), png(tmp_path / "alone"))
    assert np.array_equal(png(tmp_path / "both", "0001-seed3.png"), png(tmp_path / "long2"))


def test_generate_over_the_limit_is_one_line_before_anything_loads(pipeline, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["generate", str(pipeline), LONG + " " + LONG, "--prompt-chunks", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "Traceback" not in "\n".join(err)
    assert "longer than 2 windows of 75 tokens" in err[-1] and "prompt_chunks" in err[-1]
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):  # the range of the option itself
        main(["generate", str(pipeline), "a red circle", "--prompt-chunks", "9"])
    assert "--prompt-chunks" in capsys.readouterr().err


def test_a_walk_between_prompts_of_different_lengths(pipeline, tmp_path):
    """The short keyframe is padded with the empty prompt's window, so the two lerp; the long
    keyframe is `ldm generate`'s image of it."""
    from ldm.apps.animate import video

    out = tmp_path / "walk"
    main(["animate", str(pipeline), "--prompts", "a blue square", LONG, "--seeds", "0", "3", "--frames", "3",
          "--steps", "2", "--guidance", "3", "--prompt-chunks", "2", "--linear", "--out", str(out)])
    frames = video.read_frames(out / "frames", 3)
    assert len(frames) == 3
    main(["generate", str(pipeline), LONG, "--steps", "2", "--guidance", "3", "--seed", "3", "--prompt-chunks", "2",
          "--sampler", "dpmsolver++", "--out", str(tmp_path / "long")])  # a walk's (deterministic) sampler
    assert np.abs(frames[-1].astype(np.float32) - png(tmp_path / "long")).max() <= 1
    assert json.loads((out / "settings.json").read_text())["prompt_chunks"] == 2


def test_the_cache_key_changes_with_the_limit(tmp_path, make_stage1_run):
    run = make_stage1_run(tmp_path)
    folders = []
    for chunks in (1, 2, 1):
        cfg = DataConfig(source=str(tmp_path / "shapes"), resolution=16, batch_size=8)
        dm = LatentCacheDataModule(cfg, run / "diffusion" / "cache", FrozenAutoencoder.load(run / "vae"),
                                   TextConditioner.load(str(run), max_chunks=chunks))
        folders.append(dm.cache_folder())
    assert folders[0] != folders[1] and folders[0] == folders[2]


def long_captions(shapes) -> None:
    """Every training caption made long (three windows), and its end telling the images apart."""
    metadata = shapes / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    for i, row in enumerate(rows):
        # half the captions long, half short: training batches mix lengths
        row["text"] = (LONG + " " + row["text"]) if i % 2 else row["text"]
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_training_on_long_captions_through_ldm_train(tmp_path, make_stage1_run):
    """prompt_chunks: 3 trains from the cache (long and short captions in a batch), exports the
    limit, which ldm generate then uses; plain diffusers still loads the folder. A caption over the
    limit is one line."""
    run = make_stage1_run(tmp_path)
    long_captions(tmp_path / "shapes")
    config = diffusion_config(tmp_path, run, prompt_chunks=3,
                              samples={"prompts": [LONG], "seeds": [0], "steps": 2})
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["train", str(path)])
    pipeline = run / "pipeline"
    assert json.loads((pipeline / "model_index.json").read_text())[PROMPT_CHUNKS] == 3
    assert load_pipeline(pipeline).prompt_chunks == 3
    StableDiffusionPipeline.from_pretrained(pipeline, safety_checker=None)  # loads (one window only)
    main(["generate", str(pipeline), LONG, "--steps", "2", "--out", str(tmp_path / "images")])
    assert (tmp_path / "images" / "0000-seed0.png").is_file()


def test_training_over_the_limit_is_one_line(tmp_path, make_stage1_run, capsys):
    run = make_stage1_run(tmp_path)
    long_captions(tmp_path / "shapes")
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(diffusion_config(tmp_path, run, prompt_chunks=2)))
    with pytest.raises(SystemExit) as stop:
        main(["train", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and "longer than 2 windows" in err[-1]
    with pytest.raises(SystemExit):
        main(["train", str(path), "prompt_chunks=0"])
    assert "prompt_chunks" in capsys.readouterr().err
