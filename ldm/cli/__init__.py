"""The `ldm` command: one entry point, one subcommand per job.

User mistakes (`LdmError`) print as one line on stderr with exit status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `ldm` parser. Only the subcommand that `argv` names gets its options (each command's
    module imports its settings, and some are slow to import): `ldm generate --help` does not pay
    for animate's. Without `argv` (the docs, tests) every subcommand gets them."""
    from ldm.cli.ranges import OneLineParser

    parser = OneLineParser(
        prog="ldm", description="Latent diffusion: train on your own images, generate, animate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # ldm takes no option of its own but -h: the first word that is not one is the subcommand
    chosen = None if argv is None else next((word for word in argv if not word.startswith("-")), "")
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is None or name == chosen:
            module = importlib.import_module(f"ldm.cli.{name}")
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


# What an interrupted command kept, and how to go on (said after Ctrl-C).
ON_INTERRUPT = {
    "animate": "the frames rendered so far are kept in --out; run the same command again to resume",
    "train": "run the same command with --resume to continue from the last checkpoint",
    "quickstart": "the finished steps are kept; run it again to continue where it stopped",
    "generate": "the images written so far are kept",
}


# transformers warns, on import, that image processors fall back to PIL without torchvision: ldm
# never uses them (diffusers' IP-adapter loader imports them), and a user's first screen should not
# start with two lines about a package they do not need.
QUIET_LOGGERS = ("transformers.utils.import_utils",)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    args = build_parser(argv).parse_args(argv)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _one_line_warning(args.command)
    try:
        args.run(args)
    except LdmError as err:
        stopped = getattr(err, "exit_code", None)  # a run stopped by a signal, its state saved
        print(f"ldm {args.command}: {'' if stopped else 'error: '}{err}", file=sys.stderr)
        sys.exit(stopped or 2)
    except KeyboardInterrupt:
        # on a line of its own: a progress bar may have been mid-line
        kept = ON_INTERRUPT.get(args.command)
        print(f"\nldm {args.command}: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        sys.exit(130)
    finally:
        warnings.formatwarning = formatwarning  # main() may be called again in the same process (tests)


def _one_line_warning(command: str):
    """Warnings the user should read (an over-long prompt, ...) as one line, without Python's
    file and source line."""

    def format_warning(message, category, filename, lineno, line=None) -> str:
        return f"ldm {command}: warning: {message}\n"

    return format_warning


if __name__ == "__main__":
    main()
