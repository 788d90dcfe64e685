"""`ldm train CONFIG [section.key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config, e.g. configs/autoencoder/kl_f4_shapes.yaml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. train.max_steps=200 data.batch_size=16")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's last checkpoint (same as train.ckpt_path=last); a changed "
                             "config is refused, except keys that only say when to stop or what to log")
    parser.add_argument("--accept-changes", nargs="+", default=[], metavar="KEY",
                        help="with --resume: apply these changed keys from the resumed step on (train.lr, "
                             "train.gradient_clip)")


def run(args: argparse.Namespace) -> None:
    from ldm.stages.registry import train

    if args.accept_changes and not args.resume:
        from ldm.core.errors import LdmError

        raise LdmError("--accept-changes is for --resume: a new run takes its config as it is")
    overrides = list(args.overrides)
    if args.accept_changes:
        overrides.append(f"train.accept_changes=[{', '.join(args.accept_changes)}]")
    train(args.config, overrides, resume=args.resume)
