"""Benchmarks: what ldm's figures are measured with, each against a baseline where there is one.

Not part of the installed package (the baselines are not the product): run them from a checkout,

    python -m benchmarks                      # the list
    python -m benchmarks NAME [options]       # one; NAME -h for what it measures
    python -m benchmarks compare --run quickstart   # the speed comparisons in one table

Each benchmark is a module with `add_arguments(parser)` and `run(args) -> dict` (the figures, also
written as JSON with `--json PATH`); harness.py holds what they share (options, threads, the machine
banner, timing, results). baselines/ holds the loops they are measured against; stage2.py and
random_models.py the runs and models several of them build.
"""

# python -m benchmarks NAME runs benchmarks/NAME.py
BENCHMARKS = (
    "compare",  # the speed comparisons below in one table, each in its own process
    "generate", "diffusion_speed", "animate",  # ... those it compares
    "autoencoder", "clip", "diffusion_quality", "diffusion_peer", "quality_per_minute", "stage2_variants",
    "finetune", "image_walk", "walks", "smoothness_cost", "cache", "memory", "step_levers",
    "few_step",
)
