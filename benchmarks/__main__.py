"""`python -m benchmarks NAME [options]`: run one benchmark; without NAME, list them.

NAME is a module of this package (dashes or underscores: `diffusion-speed` is diffusion_speed.py);
`python -m benchmarks NAME -h` says what it measures and its options.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time

from benchmarks import BENCHMARKS
from benchmarks.harness import build_parser, parse, start, write_results


def listing() -> str:
    lines = ["usage: python -m benchmarks NAME [options]   (NAME -h for its options)", ""]
    for name in BENCHMARKS:
        summary = importlib.import_module(f"benchmarks.{name}").__doc__.strip().split("\n\n")[0]
        lines.append(f"  {name.replace('_', '-'):<20}{textwrap.shorten(summary, 100)}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(listing())
        return
    name, *options = argv
    module_name = name.replace("-", "_")
    if module_name not in BENCHMARKS:
        sys.exit(f"python -m benchmarks: no benchmark {name!r}; choose from "
                 f"{', '.join(n.replace('_', '-') for n in BENCHMARKS)}")
    module = importlib.import_module(f"benchmarks.{module_name}")
    args = parse(build_parser(name, module), options)
    info = start(args)
    began = time.perf_counter()
    result = module.run(args)
    if args.json:
        write_results(args.json, module_name, argv, info, result, time.perf_counter() - began)


if __name__ == "__main__":
    main(sys.argv[1:])
