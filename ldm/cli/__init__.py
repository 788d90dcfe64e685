"""The `ldm` command: one entry point, one subcommand per job.

User mistakes (`LdmError`) print as one line on stderr with exit status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ldm.core.errors import LdmError

# subcommand -> its one-line help; each is the module ldm.cli.<subcommand>
COMMANDS = {
    "data": "make or inspect datasets (e.g. synthetic shapes)",
    "train": "train a stage from a YAML config (autoencoder, clip, diffusion)",
    "generate": "generate images from prompts with a trained pipeline",
    "animate": "render latent-walk animations as GIF and MP4",
    "evaluate": "measure an autoencoder, a diffusion pipeline or a walk",
    "quickstart": "run the whole pipeline at toy scale and write a report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldm", description="Latent diffusion: train on your own images, generate, animate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"ldm.cli.{name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except LdmError as err:
        stopped = getattr(err, "exit_code", None)  # a run stopped by a signal, its state saved
        print(f"ldm {args.command}: {'' if stopped else 'error: '}{err}", file=sys.stderr)
        sys.exit(stopped or 2)
    except KeyboardInterrupt:
        print(f"ldm {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
