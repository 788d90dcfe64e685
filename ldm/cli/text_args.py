"""`--prompt-chunks N` and `--embedding FILE` (repeatable): how prompts become embeddings, the
options `ldm generate` and `ldm animate` share."""

from __future__ import annotations

from argparse import SUPPRESS

from ldm.cli.ranges import integer
from ldm.core.config import MAX_PROMPT_CHUNKS

# The options that set the settings field of their name (GenerateOptions, WalkSettings).
TEXT_OPTIONS = ("prompt_chunks", "embeddings")


def add_text_arguments(parser) -> None:
    parser.add_argument("--prompt-chunks", type=integer(1, MAX_PROMPT_CHUNKS), default=SUPPRESS, metavar="N",
                        help="windows of 75 tokens a prompt may take, each encoded on its own and the "
                             "embeddings concatenated; a longer prompt is an error (1: cut with a warning) "
                             "(default: what the pipeline was trained with, prompt_chunks)")
    parser.add_argument("--embedding", dest="embeddings", action="append", default=SUPPRESS, metavar="FILE",
                        help="a textual-inversion embedding (learned_embeds.safetensors of a "
                             "textual_inversion run) whose token prompts can then use; repeat for several")
