"""`ldm quickstart [OUT] [--tiny]`: data, three stages, samples, a walk, evaluation and a report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train the whole pipeline on synthetic shapes on this machine (about 15 minutes "
                          "on a 2-core CPU) and write OUT/report.html. Finished steps are skipped on a rerun.")
    parser.add_argument("out", nargs="?", default="quickstart", help="output folder (default ./quickstart)")
    parser.add_argument("--scale", choices=("toy", "tiny"), default="toy",
                        help="toy (default): the CPU-sized configs; tiny: a few steps each, for tests")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="scale", help="same as --scale tiny")


def run(args: argparse.Namespace) -> None:
    from ldm.apps.quickstart import quickstart

    quickstart(args.out, args.scale)
