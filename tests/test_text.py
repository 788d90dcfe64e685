"""The text side: a tokenizer trained on captions, text encoders loaded from folders, prompt embeddings."""

import warnings

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ldm.components.text_encoder import encode_prompts, load_text_encoder
from ldm.core.errors import LdmError
from ldm.stages.clip.tokenizer import train_tokenizer

CAPTIONS = [
    "a red circle in the top left on a black background",
    "a small blue square in the center",
    "there is a green triangle in the bottom right on a white background",
    "a picture of a large yellow circle",
] * 20
MAX_LENGTH = 16
HIDDEN = 32


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS, vocab_size=600, model_max_length=MAX_LENGTH)


def tiny_text_encoder(tokenizer) -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2, projection_dim=HIDDEN,
                            max_position_embeddings=MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):
    """A RUN-style folder: text_encoder/ and tokenizer/ side by side."""
    run = tmp_path_factory.mktemp("run")
    tiny_text_encoder(tokenizer).save_pretrained(run / "text_encoder", safe_serialization=True)
    tokenizer.save_pretrained(run / "tokenizer")
    return run


def test_tokenizer_is_clip_style(tokenizer, tmp_path):
    ids = tokenizer("A Red Circle")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>"]
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert len(tokenizer) <= 600
    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a red circle, zebra!")["input_ids"] == tokenizer("a red circle, zebra!")["input_ids"]
    assert again.model_max_length == MAX_LENGTH


def test_tokenizer_vocab_too_small():
    with pytest.raises(LdmError, match="vocab_size"):
        train_tokenizer(CAPTIONS, vocab_size=100)


def test_run_folder_loads_frozen_and_encodes(run_dir):
    tokenizer, encoder = load_text_encoder(run_dir)
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    embeddings = encode_prompts(tokenizer, encoder, ["a red circle", "a blue square in the center"])
    assert embeddings.shape == (2, MAX_LENGTH, HIDDEN)
    assert not torch.allclose(embeddings[0], embeddings[1])


def test_plain_clip_folder_loads(tmp_path, tokenizer):
    """A pretrained-style folder: model and tokenizer files in one place, as on the hub."""
    tiny_text_encoder(tokenizer).save_pretrained(tmp_path, safe_serialization=True)
    tokenizer.save_pretrained(tmp_path)
    loaded_tokenizer, encoder = load_text_encoder(tmp_path, dtype=torch.float64)
    embeddings = encode_prompts(loaded_tokenizer, encoder, ["a red circle"] * 3)
    assert embeddings.shape == (3, MAX_LENGTH, HIDDEN)
    assert embeddings.dtype == torch.float64


def test_empty_prompt_is_start_end_padding(run_dir):
    tokenizer, encoder = load_text_encoder(run_dir)
    empty = encode_prompts(tokenizer, encoder, [""])
    ids = torch.tensor([[tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (MAX_LENGTH - 1)])
    assert torch.allclose(empty, encoder(input_ids=ids).last_hidden_state)
    assert not torch.allclose(empty, encode_prompts(tokenizer, encoder, ["a red circle"]))


def test_unknown_words_encode_to_something_new(run_dir):
    tokenizer, encoder = load_text_encoder(run_dir)
    prompts = ["a xylophone", "a zeppelin", "a ☃"]
    ids = tokenizer(prompts)["input_ids"]
    assert all(len(row) > 3 for row in ids)  # spelled out in pieces, not dropped
    assert tokenizer.unk_token_id not in [i for row in ids for i in row[1:-1]]
    embeddings = encode_prompts(tokenizer, encoder, prompts)
    assert torch.isfinite(embeddings).all()
    assert not torch.allclose(embeddings[0], embeddings[1])


def test_long_prompt_truncated_with_one_warning(run_dir):
    tokenizer, encoder = load_text_encoder(run_dir)
    long = "a red circle " * 20
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = encode_prompts(tokenizer, encoder, [long, "a square"])
    assert embeddings.shape == (2, MAX_LENGTH, HIDDEN)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "a red circle" in messages[0] and str(MAX_LENGTH) in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompts(tokenizer, encoder, ["a red circle"])  # short prompts: no warning


def test_missing_parts_are_named(tmp_path, run_dir):
    with pytest.raises(LdmError, match="not found"):
        load_text_encoder(tmp_path / "nowhere")
    with pytest.raises(LdmError, match="config.json"):
        load_text_encoder(tmp_path)
    half = tmp_path / "half"
    (half / "text_encoder").mkdir(parents=True)
    with pytest.raises(LdmError, match="tokenizer/"):
        load_text_encoder(half)
