"""Prompts as token windows: what the text encoder reads of a prompt, however long it is.

CLIP reads `model_max_length` tokens (77 for Stable Diffusion's): a start token, 75 of the prompt,
an end token and padding. A longer prompt is split into windows of 75 of its tokens, each with its
own start and end tokens and padding; `ldm.components.text_encoder.embed_prompts` encodes the
windows separately and concatenates their embeddings along the sequence, as compel and kohya's
sd-scripts (`--max_token_length 150/225`) do. transformers' tokenizer has no such split (it only
truncates), hence these few functions.

`max_chunks` is how many windows a prompt may take (the diffusion config's `prompt_chunks`,
`ldm generate --prompt-chunks`). 1 is Stable Diffusion's behaviour and ldm's before long prompts:
a longer prompt is cut with a warning. Above 1 the user asked for long prompts, so one that does not
fit is an error naming it, not silently cut.
"""

from __future__ import annotations

import warnings

import torch
from transformers import CLIPTokenizer

from ldm.core.config import MAX_PROMPT_CHUNKS
from ldm.core.errors import LdmError

PROMPT_IN_MESSAGE = 60  # characters of a long prompt quoted in a warning or an error


def window(tokenizer: CLIPTokenizer) -> int:
    """How many of a prompt's tokens one window holds: the context less the start and end tokens."""
    return tokenizer.model_max_length - 2


def prompt_token_ids(tokenizer: CLIPTokenizer, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """Each prompt's own tokens (no start or end token), at most `max_tokens` + 1: one more than fits
    tells that a prompt is too long (and an explicit max_length keeps transformers from warning)."""
    return tokenizer(list(prompts), add_special_tokens=False, truncation=True,
                     max_length=max_tokens + 1)["input_ids"]


def chunk_counts(tokenizer: CLIPTokenizer, prompts: list[str], max_chunks: int = 1) -> list[int]:
    """How many windows each prompt takes (at least 1, at most `max_chunks`)."""
    prompts = expand_learned_tokens(tokenizer, prompts)
    size = window(tokenizer)
    ids = prompt_token_ids(tokenizer, prompts, size * max_chunks)
    return [min(max(1, -(-len(row) // size)), max_chunks) for row in ids]


def check_prompt_lengths(tokenizer: CLIPTokenizer, prompts: list[str], max_chunks: int) -> None:
    """LdmError naming the first prompt longer than `max_chunks` windows (only when above 1: one
    window cuts with a warning instead, `tokenize_chunks`). Usable before any weights load."""
    if max_chunks > 1:
        _too_long(tokenizer, expand_learned_tokens(tokenizer, prompts), max_chunks)


def vector_token_names(token: str, vectors: int) -> list[str]:
    """The tokens of a textual-inversion embedding of `vectors` vectors, as diffusers'
    `load_textual_inversion` adds them: `token`, `token_1`, ..., `token_{vectors-1}`."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


def is_known_word(tokenizer: CLIPTokenizer, token: str) -> bool:
    """Whether `token` is already one token of the tokenizer ("red" is, as "red</w>"; "<pink>" is not):
    a learned word of that name would take its place in every prompt."""
    if token in tokenizer.get_vocab():
        return True
    pieces = tokenizer.tokenize(token)
    return len(pieces) == 1 and pieces[0] != tokenizer.unk_token


def expand_learned_tokens(tokenizer: CLIPTokenizer, prompts: list[str]) -> list[str]:
    """Prompts with each multi-vector learned token written out as all its tokens ("<pink>" ->
    "<pink> <pink>_1"), as diffusers' `maybe_convert_prompt` does before its pipelines tokenize;
    here for every prompt ldm encodes (training, generate, walks), so they all read a token alike."""
    added = tokenizer.added_tokens_encoder
    multi = [token for token in added if f"{token}_1" in added]
    if not multi:
        return list(prompts)
    out = []
    for prompt in prompts:
        for token in multi:
            if token in prompt:
                count = 1
                while f"{token}_{count}" in added:
                    count += 1
                prompt = prompt.replace(token, " ".join(vector_token_names(token, count)))
        out.append(prompt)
    return out


def tokenize_chunks(tokenizer: CLIPTokenizer, prompts: list[str], max_chunks: int = 1) -> list[torch.Tensor]:
    """Each prompt's token windows, a (chunks, model_max_length) tensor of ids: [start, up to 75
    tokens, end, padding]. A prompt that fits one window gives exactly what the tokenizer gives with
    padding="max_length"; "" gives one window of start, end and padding. Learned tokens of several
    vectors are written out first (`expand_learned_tokens`)."""
    prompts = expand_learned_tokens(tokenizer, prompts)
    size = window(tokenizer)
    ids = prompt_token_ids(tokenizer, prompts, size * max_chunks)
    too_long = _too_long(tokenizer, prompts, max_chunks, ids)
    if too_long:  # max_chunks is 1 here: longer ones raised
        first = too_long[0]
        others = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
        warnings.warn(f"prompt '{_quoted(first)}'{others} is longer than the text encoder's "
                      f"{tokenizer.model_max_length} tokens: the end is cut off (prompt_chunks, "
                      "--prompt-chunks: encode it in several windows)", stacklevel=4)
    return [torch.tensor([_window(tokenizer, row[start:start + size])
                          for start in range(0, max(1, min(len(row), size * max_chunks)), size)])
            for row in ids]


def _too_long(tokenizer: CLIPTokenizer, prompts: list[str], max_chunks: int,
              ids: list[list[int]] | None = None) -> list[str]:
    """The prompts longer than `max_chunks` windows; with more than one window allowed, an
    LdmError naming the first."""
    size = window(tokenizer)
    ids = prompt_token_ids(tokenizer, prompts, size * max_chunks) if ids is None else ids
    too_long = [prompt for prompt, row in zip(prompts, ids) if len(row) > size * max_chunks]
    if too_long and max_chunks > 1:
        raise LdmError(f"prompt '{_quoted(too_long[0])}' is longer than {max_chunks} windows of {size} tokens "
                       f"({max_chunks * size} tokens, prompt_chunks: {max_chunks}): shorten it or raise "
                       f"prompt_chunks (--prompt-chunks), up to {MAX_PROMPT_CHUNKS}")
    return too_long


def _window(tokenizer: CLIPTokenizer, ids: list[int]) -> list[int]:
    """[start] + ids + [end], padded to the context length with the tokenizer's padding token."""
    row = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return row + [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(row))


def _quoted(prompt: str) -> str:
    return prompt if len(prompt) <= PROMPT_IN_MESSAGE else prompt[:PROMPT_IN_MESSAGE] + "..."
