"""`ldm train CONFIG [section.key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/autoencoder/kl_f4_shapes.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_steps=200 data.batch_size=16")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's last checkpoint (same as train.ckpt_path=last)")


def run(args: argparse.Namespace) -> None:
    from ldm.stages.registry import train

    train(args.config, args.overrides, resume=args.resume)
