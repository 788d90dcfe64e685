"""Textual-inversion embeddings onto a pipeline: `ldm generate/animate --embedding FILE`.

A file is what a `textual_inversion:` run exports (RUN/embeddings/learned_embeds.safetensors) or
diffusers' textual-inversion script writes: one tensor, (vectors, width) or (width,), named by its
token. It loads through diffusers' own `load_textual_inversion` (the pipeline class has its mixin),
which adds the token (and `token_1`, ... for several vectors) to the tokenizer and its vectors to the
text encoder; `ldm.components.prompt_tokens` writes a multi-vector token out in prompts, as diffusers'
pipelines do. `check_embeddings` reads only the files' headers, before any model loads.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import CLIPTokenizer

from ldm.components.prompt_tokens import is_known_word, vector_token_names
from ldm.core.errors import LdmError, first_line


def embedding_token(path: str | Path) -> tuple[str, int, int]:
    """(token, vectors, width) of a textual-inversion file, from its header, or an LdmError."""
    path = Path(path)
    try:
        found = path.is_file()
    except OSError:  # a name too long for the file system
        found = False
    if not found:
        raise LdmError(f"--embedding {path}: file not found")
    if path.suffix != ".safetensors":  # a .bin or .pt would be unpickled: never from a user's path
        raise LdmError(f"--embedding {path}: not a .safetensors file (learned_embeds.safetensors of a "
                       "textual_inversion run)")
    try:
        with safe_open(str(path), framework="pt") as opened:
            names = list(opened.keys())
            shape = opened.get_slice(names[0]).get_shape() if len(names) == 1 else None
    except (SafetensorError, OSError) as err:
        raise LdmError(f"--embedding {path}: cannot read it: {first_line(err)}") from None
    if shape is None or len(shape) not in (1, 2):
        raise LdmError(f"--embedding {path}: expected one tensor (vectors x width) named by its token, "
                       f"found {len(names)} tensor(s)")
    return names[0], (shape[0] if len(shape) == 2 else 1), shape[-1]


def check_embeddings(paths: list[str], tokenizer: CLIPTokenizer, width: int) -> list[str]:
    """The tokens the files add, checked: new to the tokenizer, of the text encoder's `width`, each
    once. `tokenizer` gets them added (a copy's job: pass one that is not used to encode after)."""
    tokens = []
    for path in paths:
        token, vectors, size = embedding_token(path)
        if size != width:
            raise LdmError(f"--embedding {path}: its vectors are {size} wide, the pipeline's text encoder's "
                           f"{width} (it was trained for another text encoder)")
        if is_known_word(tokenizer, token) or token in tokens:
            raise LdmError(f"--embedding {path}: its token {token!r} is already a word of the pipeline's "
                           "tokenizer (or of another --embedding)")
        tokens.append(token)
        tokenizer.add_tokens(vector_token_names(token, vectors))
    return tokens


def load_embeddings(pipe, paths: list[str]) -> None:
    """Each file's token and vectors added to `pipe` (diffusers' `load_textual_inversion`)."""
    for path in paths:
        try:
            pipe.load_textual_inversion(str(path), use_safetensors=True)
        except ValueError as err:
            raise LdmError(f"--embedding {path}: {first_line(err)}") from None
