"""Few-step generation: a teacher pipeline at 20 DPM-Solver++ steps with guidance against its latent
consistency student (`ldm train configs/distill/lcm_shapes.yaml`) at 1, 2, 4 and 8 LCM steps.

    python -m benchmarks few-step --teacher QUICKSTART/pipeline --student runs/shapes_lcm/pipeline \
        --data QUICKSTART/data --clip QUICKSTART/clip --sheet docs/lcm_samples.png

Speed: images per second of `ldm generate`'s pipeline on one batch, the teacher and each student
setting called in alternation (the same prompts, seeds and machine), medians of --repeats calls,
wall clock and CPU time. Quality: `ldm evaluate diffusion` on each (the shapes' held-out prompts:
prompt fidelity read back by the attribute checker, and FID on the run's CLIP image features).
The sample sheet puts the teacher's images and the student's at each step count side by side, for
the same prompts and seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from benchmarks.generate import PROMPTS
from benchmarks.harness import clock
from ldm.apps.evaluate.diffusion import evaluate_diffusion
from ldm.apps.evaluate.generated import held_out_requests
from ldm.core.images import contact_sheet, write_png
from ldm.sampling.pipeline_io import load_pipeline
from ldm.sampling.samplers import make_sampler


def add_arguments(parser) -> None:
    parser.add_argument("--teacher", required=True, help="the teacher pipeline folder")
    parser.add_argument("--student", required=True, help="the distilled pipeline folder (LCMScheduler)")
    parser.add_argument("--data", help="the shapes data folder, for `ldm evaluate diffusion` (none: speed only)")
    parser.add_argument("--clip", help="CLIP folder for FID on its features (default: RUN/clip beside each pipeline)")
    parser.add_argument("--teacher-steps", type=int, default=20)
    parser.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--guidance", type=float, default=4.0, help="both (the student's is its input)")
    parser.add_argument("--batch", type=int, default=16, help="images per timed call (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each setting")
    parser.add_argument("--n", type=int, default=8, help="images per held-out prompt for the evaluation")
    parser.add_argument("--sheet", type=Path, help="write the sample sheet here (PNG)")


def settings(args) -> list[tuple[str, str, str, int]]:
    """(label, pipeline, sampler, steps): the teacher, then the student at each step count."""
    teacher = [(f"teacher, {args.teacher_steps} DPM-Solver++ steps", args.teacher, "dpmsolver++", args.teacher_steps)]
    return teacher + [(f"student, {steps} LCM step{'s' if steps > 1 else ''}", args.student, "lcm", steps)
                      for steps in args.student_steps]


def call(pipe, sampler: str, steps: int, guidance: float, prompts: list[str], seeds: list[int]):
    pipe.scheduler = make_sampler(sampler, pipe.scheduler.config)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    with clock() as timed:
        images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators).images
    return timed, images


def speed(args, pipes: dict) -> dict[str, dict]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    seeds = list(range(args.batch))
    runs = settings(args)
    times = {label: [] for label, *_ in runs}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for label, pipeline, sampler, steps in runs:
            timed, _ = call(pipes[pipeline], sampler, steps, args.guidance, prompts, seeds)
            if repeat:
                times[label].append(timed)
    return {label: {"images_per_second": args.batch / statistics.median(t.wall for t in ts),
                    "images_per_cpu_second": args.batch / statistics.median(t.cpu for t in ts)}
            for label, ts in times.items()}


def quality(args) -> dict[str, dict]:
    found = {}
    for label, pipeline, _, steps in settings(args):
        # `ldm evaluate diffusion` as the command runs it: the pipeline's own sampler (lcm for the student)
        evaluation = evaluate_diffusion(pipeline, args.data, clip=args.clip, n=args.n, steps=steps,
                                        guidance=args.guidance)
        found[label] = {metric.key: metric.value for metric in evaluation.metrics}
    return found


def sample_sheet(args, pipes: dict, path: Path) -> None:
    """One row per setting: 4 held-out prompts x 4 seeds."""
    prompts = held_out_requests()[0][:4]
    row_prompts = [prompt for prompt in prompts for _ in range(4)]
    seeds = [seed for _ in prompts for seed in range(4)]
    rows = []
    for label, pipeline, sampler, steps in settings(args):
        _, images = call(pipes[pipeline], sampler, steps, args.guidance, row_prompts, seeds)
        rows.append((label, images))
    write_png(path, contact_sheet(rows, columns=len(row_prompts)), {"prompts": "; ".join(prompts)})


def run(args) -> dict:
    pipes = {path: load_pipeline(path) for path in (args.teacher, args.student)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    rates = speed(args, pipes)
    teacher = next(iter(rates))
    print(f"batch {args.batch}, guidance {args.guidance}, median of {args.repeats} calls each, alternating")
    for label, rate in rates.items():
        print(f"{label:>32}: {rate['images_per_second']:7.1f} images/s wall clock "
              f"({rate['images_per_second'] / rates[teacher]['images_per_second']:.1f}x), "
              f"{rate['images_per_cpu_second']:7.1f} per CPU-second")
    result = {"speed": rates}
    if args.data:
        result["quality"] = quality(args)
        for label, metrics in result["quality"].items():
            print(f"{label:>32}: " + ", ".join(f"{key} {value:.3g}" for key, value in metrics.items()))
    if args.sheet:
        sample_sheet(args, pipes, args.sheet)
        print(f"sample sheet: {args.sheet}")
    return result
