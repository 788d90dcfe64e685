"""Textual inversion: a new word learned as text-encoder input vectors, everything else frozen.

    textual_inversion: {token: "<pink>", initializer: red, vectors: 1}

As diffusers' `examples/textual_inversion/textual_inversion.py` does, the word is added to the
tokenizer (with `token_1`, ... for several vectors, the names `load_textual_inversion` gives them)
and the text encoder's embedding table grows by as many rows, started from the initializer word's
embedding. Unlike that script, which trains the whole table and puts every other row back after
each step, the vectors here are a parameter of their own (`LearnedTokens.vectors`) that a forward
hook on the embedding table puts in place of the new rows: the optimizer, the EMA and the
checkpoints hold nothing else, so nothing else can change.

The export is diffusers' file, `RUN/embeddings/learned_embeds.safetensors`: one tensor (vectors x
width) named by the token, which `pipe.load_textual_inversion(path)` and `ldm generate --embedding`
load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

from ldm.components.prompt_tokens import is_known_word, vector_token_names
from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError
from ldm.core.layout import LEARNED_EMBEDS
from ldm.stages.diffusion.config import TextualInversionConfig


class LearnedTokens(torch.nn.Module):
    """The new word's vectors, and the hook that gives them to the text encoder."""

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, cfg: TextualInversionConfig):
        super().__init__()
        names = vector_token_names(cfg.token, cfg.vectors)
        if any(is_known_word(tokenizer, name) for name in names):
            raise LdmError(f"textual_inversion.token {cfg.token!r} is already a word of the tokenizer: choose "
                           f"a new one (e.g. <{cfg.token}>)")
        table = text_encoder.get_input_embeddings().weight
        start = _initial_vector(tokenizer, table, cfg.initializer)
        tokenizer.add_tokens(names)
        ids = tokenizer.convert_tokens_to_ids(names)
        if ids != list(range(ids[0], ids[0] + len(ids))):  # new tokens are numbered in order
            raise LdmError(f"textual_inversion: the tokenizer numbered the new tokens {ids}, not in a row")
        # Rows for the new ids, so that they are valid input; their values are never read (the hook
        # replaces them).
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        self.token, self.first_id = cfg.token, ids[0]
        self.vectors = torch.nn.Parameter(start.repeat(cfg.vectors, 1))
        text_encoder.get_input_embeddings().register_forward_hook(self._put_in_place)

    def _put_in_place(self, module, args, output: torch.Tensor) -> torch.Tensor:
        """The embedding table's output with the new tokens' rows taken from `vectors`."""
        index = args[0] - self.first_id
        hit = (index >= 0) & (index < len(self.vectors))
        if not hit.any():
            return output
        learned = self.vectors.to(output.dtype)[index.clamp(0, len(self.vectors) - 1)]
        return torch.where(hit[..., None], learned, output)


def _initial_vector(tokenizer: CLIPTokenizer, table: torch.Tensor, initializer: str | None) -> torch.Tensor:
    """The mean of the initializer word's token embeddings, or of the whole vocabulary's."""
    if initializer is None:
        return table.detach().mean(0).clone()
    ids = tokenizer(initializer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LdmError(f"textual_inversion.initializer {initializer!r} has no tokens")
    return table.detach()[ids].mean(0).clone()


def export_embedding(learned: LearnedTokens, out_dir: Path) -> Path:
    """RUN/embeddings/learned_embeds.safetensors (the caller has swapped in the EMA weights)."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as tmp:
        save_file({learned.token: learned.vectors.detach().float().cpu().contiguous()}, tmp / LEARNED_EMBEDS)
    return out_dir
