"""`ldm data shapes OUT`: write the synthetic shapes dataset.
`ldm data clipart OUT`: Debian's openclipart-png as a captioned imagefolder (ldm/data/clipart.py).
`ldm data check SOURCE`: read a dataset as training will and report on it (ldm/data/check.py)."""

from __future__ import annotations

import argparse
import re

from ldm.cli.ranges import COUNT, SEED, SIDE, integer, number
from ldm.core.errors import LdmError, first_line
from ldm.core.layout import TOKENIZER

SIZE = re.compile(r"^(\d+)x(\d+)$")  # a bucket size on the command line: WIDTHxHEIGHT
# `ldm data check` options that set a `data:` key of the same name (dashes for underscores).
DATA_OPTIONS = ("split", "image_column", "caption_column", "resolution", "background", "max_pixels",
                "empty_captions", "val_fraction", "max_samples", "mask", "mask_column")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="KIND", required=True)
    shapes = sub.add_parser(
        "shapes", help="coloured shapes with compositional captions (imagefolder layout)",
        description="Write OUT/train and OUT/test (held-out attribute combinations) as PNG files "
                    "with metadata.jsonl. The same seed gives the same bytes.")
    shapes.add_argument("out", help="folder to write")
    shapes.add_argument("--n", type=COUNT, default=500, help="training images (default 500)")
    shapes.add_argument("--n-test", type=integer(0), default=None,
                        help="images of held-out combinations (default max(64, n/5))")
    shapes.add_argument("--size", type=SIDE, default=32, help="image side in pixels (default 32)")
    shapes.add_argument("--seed", type=SEED, default=0, help="random seed (default 0)")
    shapes.add_argument("--colours", nargs="+", metavar="COLOUR",
                        help="draw only these colours, e.g. pink, which the default data never draws "
                             "(to teach a trained model a new word); default: the standard palette")
    shapes.set_defaults(data_run=run_shapes)

    clipart = sub.add_parser(
        "clipart", help="Debian's clip art (apt-get install openclipart-png) as captioned images",
        description="Write OUT/train and OUT/test (a held-out share) from openclipart-png's PNGs, as they are, "
                    "with metadata.jsonl: a caption from each drawing's title and category folders, the "
                    "authors' names dropped. OUT is written whole or not at all.")
    clipart.add_argument("out", help="folder to write (must not exist)")
    clipart.add_argument("--source", default=None, help="the PNG folder (default /usr/share/openclipart/png)")
    clipart.add_argument("--test-fraction", type=number(0.0, 0.99), default=0.1,
                         help="held-out share (default 0.1)")
    clipart.add_argument("--seed", type=SEED, default=0, help="random seed of the held-out draw (default 0)")
    clipart.set_defaults(data_run=run_clipart)

    check = sub.add_parser(
        "check", help="read a dataset as training will and report what it holds",
        description="Read SOURCE exactly as training will (decoding, skipped files, buckets, captions) "
                    "and report images by format and mode, every skipped file and why, sizes and "
                    "aspect ratios, bucket assignment and the pixels cropped away, empty, repeated "
                    "and over-long captions. Exits with status 2 where training would fail.")
    check.add_argument("source", help="the data.source to check (a folder, a saved dataset, .tar or .parquet shards "
                       "as a glob, a hub name)")
    check.add_argument("--config", help="take the other data: settings from this stage config")
    check.add_argument("--split", help="split to read (default train)")
    check.add_argument("--resolution", type=SIDE, help="target side in pixels (data.resolution; default 32)")
    check.add_argument("--buckets", nargs="*", metavar="SPEC",
                       help="aspect-ratio buckets: alone, the default list for --resolution; or sizes "
                            "(64x64 96x48 ...) or settings (area=4096 min_side=32 max_side=128 step=8)")
    check.add_argument("--background", help="colour under transparent pixels (default white)")
    check.add_argument("--max-pixels", type=COUNT, help="skip images with more pixels (default PIL's limit)")
    check.add_argument("--empty-captions", choices=["skip", "keep"], help="images without a caption (default skip)")
    check.add_argument("--image-column", help="image column (default image)")
    check.add_argument("--caption-column", help="caption column (default text)")
    check.add_argument("--val-fraction", type=number(0.0, 0.99), help="share held out for validation (default 0.1)")
    check.add_argument("--max-samples", type=COUNT, help="read only the first N images")
    check.add_argument("--mask", choices=["none", "alpha", "file", "column"],
                       help="loss masks to report on (data.mask): the images' alpha, cat.mask.png files beside "
                            "them, or a column; --preview dims each image where its mask leaves it out")
    check.add_argument("--mask-column", help="the column of mask images with --mask column (default mask)")
    check.add_argument("--tokenizer", help="a tokenizer folder (RUN/tokenizer, a CLIP model) to count caption "
                                           "tokens with; without it, they are estimated from words")
    check.add_argument("--preview", metavar="DIR", help="write each image as training sees it to DIR")
    check.set_defaults(data_run=run_check)


def run(args: argparse.Namespace) -> None:
    args.data_run(args)


def run_shapes(args: argparse.Namespace) -> None:
    from ldm.data.shapes.generator import make_shapes_dataset

    out = make_shapes_dataset(args.out, n=args.n, size=args.size, seed=args.seed, n_test=args.n_test,
                              colours=args.colours)
    test = f"more {', '.join(args.colours)} images" if args.colours else "held-out combinations"
    print(f"wrote {args.n} training images to {out / 'train'} and {test} to {out / 'test'}")


def run_clipart(args: argparse.Namespace) -> None:
    from ldm.data.clipart import DEFAULT_SOURCE, make_clipart_dataset

    made = make_clipart_dataset(args.out, args.source or DEFAULT_SOURCE, args.test_fraction, args.seed)
    print(f"wrote {made.train} training and {made.test} held-out images to {made.out} "
          f"({made.authors} author names recognised and dropped from captions)")


def run_check(args: argparse.Namespace) -> None:
    from ldm.data.check import CLIP_TOKEN_LIMIT, check_data, format_report

    cfg = check_settings(args)
    count_tokens, limit = None, CLIP_TOKEN_LIMIT
    if args.tokenizer:
        count_tokens, limit = token_counter(args.tokenizer)
    report = check_data(cfg, count_tokens, limit, args.preview)
    print(format_report(report))
    if report.fatal:
        raise LdmError(report.fatal)


def check_settings(args: argparse.Namespace):
    """The data: settings to check: the config's (if any), then the options given, then SOURCE."""
    from ldm.core.config import build, find_config, read_yaml
    from ldm.data.config import DataConfig

    data = dict(read_yaml(find_config(args.config)).get("data") or {}) if args.config else {}
    typed = {name: getattr(args, name) for name in DATA_OPTIONS if getattr(args, name) is not None}
    data.update(typed)
    data["source"] = args.source
    if args.buckets is not None:
        data["buckets"] = bucket_settings(args.buckets)
    try:
        return build(DataConfig, data, where="data")
    except LdmError as err:
        raise LdmError(named_as_typed(str(err), typed)) from None


def named_as_typed(message: str, typed: dict) -> str:
    """A value the user typed as an option (--max-pixels) is named so, not by its config key
    (data.max_pixels), which the user never wrote; a value from --config keeps its key."""
    key = re.match(r"data: data\.(\w+)", message)
    if key and key[1] in typed:
        return "--" + key[1].replace("_", "-") + message[key.end():]
    return message


def bucket_settings(specs: list[str]) -> dict:
    """--buckets SPEC ...: sizes (WxH) and key=value settings as the `buckets:` section."""
    section, sizes = {}, []
    for spec in specs:
        size = SIZE.match(spec)
        key, sep, value = spec.partition("=")
        if size:
            sizes.append([int(size[1]), int(size[2])])
        elif sep and key:
            section[key] = value
        else:
            raise LdmError(f"--buckets {spec}: give sizes as WIDTHxHEIGHT (64x48) or settings as key=value "
                           "(area, min_side, max_side, step)")
    if sizes:
        section["sizes"] = sizes
    return section


def token_counter(path: str):
    """(tokens of a caption, the encoder's limit) from a local tokenizer folder."""
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(path)
    if (folder / TOKENIZER).is_dir():  # a RUN folder or a pipeline: its tokenizer/
        folder = folder / TOKENIZER
    if not folder.is_dir():
        raise LdmError(f"--tokenizer {path}: no such folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise LdmError(f"--tokenizer {path}: no tokenizer there ({first_line(err)})") from None
    return (lambda text: len(tokenizer(text).input_ids)), tokenizer.model_max_length
