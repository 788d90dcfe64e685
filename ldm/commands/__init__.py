"""One module per `ldm` subcommand: `add_arguments(parser)` and `run(args)`.

Modules here import only argparse-level things at the top, so `ldm --help` stays fast; the work
is imported inside `run`.
"""
