"""`ldm data shapes OUT`: write the synthetic shapes dataset."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="KIND", required=True)
    shapes = sub.add_parser(
        "shapes", help="coloured shapes with compositional captions (imagefolder layout)",
        description="Write OUT/train and OUT/test (held-out attribute combinations) as PNG files "
                    "with metadata.jsonl. The same seed gives the same bytes.")
    shapes.add_argument("out", help="folder to write")
    shapes.add_argument("--n", type=int, default=500, help="training images (default 500)")
    shapes.add_argument("--n-test", type=int, default=None,
                        help="images of held-out combinations (default max(64, n/5))")
    shapes.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--colours", nargs="+", metavar="COLOUR",
                        help="draw only these colours, e.g. pink, which the default data never draws "
                             "(to teach a trained model a new word); default: the standard palette")


def run(args: argparse.Namespace) -> None:
    from ldm.data.shapes.generator import make_shapes_dataset

    out = make_shapes_dataset(args.out, n=args.n, size=args.size, seed=args.seed, n_test=args.n_test,
                              colours=args.colours)
    test = f"more {', '.join(args.colours)} images" if args.colours else "held-out combinations"
    print(f"wrote {args.n} training images to {out / 'train'} and {test} to {out / 'test'}")
