"""`--lora DIR [--lora-scale S]`, repeatable: the LoRA options `ldm generate` and `ldm animate` share."""

from __future__ import annotations

import argparse


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora", action="append", default=[], metavar="DIR",
                        help="a LoRA folder (RUN/lora of a LoRA run) to load onto the pipeline; repeat "
                             "for several. It must have been trained on this pipeline's UNet")
    parser.add_argument("--lora-scale", action="append", type=float, default=[], metavar="S",
                        help="the scale of each --lora, in the same order (default 1: as trained; "
                             "0: no effect)")


def lora_choices_of(args: argparse.Namespace) -> list:
    from ldm.sampling.lora import lora_choices

    return lora_choices(args.lora, args.lora_scale)
