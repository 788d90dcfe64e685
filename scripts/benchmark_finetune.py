"""Teach a trained shapes model a colour it never saw, with LoRA and with full fine-tuning.

    python scripts/benchmark_finetune.py quickstart                  # the quickstart's pipeline, 3 min each
    python scripts/benchmark_finetune.py /tmp/q --minutes 0.1 --images 32 --seeds 1 --steps 2   # a dry run

From QUICKSTART/pipeline (trained on the six colours of `ldm data shapes`), it
  1. writes the pink data: `ldm data shapes OUT/pink --colours pink` (a colour and a word the base
     model never saw; the captions are the usual templates),
  2. measures prompt fidelity before: on "a pink <shape> <position>" for every shape and position,
     and on the default data's held-out prompts (colour, shape and position combinations the base
     never saw in training),
  3. fine-tunes the pipeline on the pink data with `configs/diffusion/ldm_shapes.yaml` (its batch,
     loss and EMA; `pretrained:` the quickstart's pipeline), twice, each for at most --minutes of
     training (the latent cache is built before the clock starts): LoRA adapters on the UNet's
     attention (`lora:`), and every UNet weight,
  4. measures both prompt sets again after each, the LoRA through `ldm generate --lora`.

Prompt fidelity is the share of generated images whose colour and shape are the prompt's, as the
attribute checker of `ldm.data.shapes.checker` reads them (`ldm.apps.evaluate.shapes_fidelity`):
on the pink prompts it says whether the new word was learnt, on the held-out prompts how much of
what the model knew survived. Prints a table and writes OUT/finetune.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from ldm.apps.evaluate import held_out_requests, shapes_fidelity
from ldm.core.errors import LdmError
from ldm.core.layout import PIPELINE
from ldm.data.shapes.generator import POSITIONS, SHAPES, make_shapes_dataset
from ldm.sampling.lora import LoraChoice
from ldm.stages.registry import load_config, train_stage

NEW_COLOUR = "pink"
CONFIG = "diffusion/ldm_shapes.yaml"
IMAGE_SIZE = 32
DATA_SEED = 1
METHODS = ("lora", "full")


def pink_requests() -> tuple[list[str], list[dict]]:
    """A prompt for every shape in every position, in the new colour, and what each asks for."""
    attributes = [{"colour": NEW_COLOUR, "shape": shape, "position": position}
                  for shape in SHAPES for position in POSITIONS]
    return [f"a {a['colour']} {a['shape']} {a['position']}" for a in attributes], attributes


def measure(pipeline: Path, out: Path, args, loras: list[LoraChoice] = ()) -> dict:
    """Prompt fidelity on the pink prompts and on the held-out prompts."""
    scores = {}
    for name, (prompts, attributes) in (("pink", pink_requests()), ("held_out", held_out_requests())):
        scores[name] = shapes_fidelity(str(pipeline), prompts, attributes, out / name, n=args.seeds,
                                       seed=0, steps=args.steps, guidance=args.guidance, loras=loras)
    return scores


def fine_tune(method: str, base: Path, data: Path, out: Path, args) -> tuple[Path, dict]:
    """Train one method on the pink data; (its export, what the run did)."""
    overrides = [f"run_dir={out / method}", f"pretrained={base}", "vae=null", "text_encoder=null",
                 "noise=null", f"data.source={data}", f"train.max_minutes={args.minutes}",
                 f"train.max_steps={args.max_steps}", "samples.prompts=[]"]
    if method == "lora":
        overrides += [f"lora.rank={args.rank}", f"train.lr={args.lr_lora}"]
    else:
        overrides += [f"train.lr={args.lr_full}"]
    cfg = load_config(CONFIG, overrides)
    shutil.rmtree(out / method, ignore_errors=True)  # each measurement starts from the base
    start = time.perf_counter()
    stage = train_stage(cfg)
    seconds = round(time.perf_counter() - start, 1)
    return stage.export, {"steps": stage.trainer.global_step, "seconds": seconds, "lr": cfg.train.lr,
                          "batch": cfg.data.batch_size}


def percent(fraction: float) -> str:
    return f"{100 * fraction:5.1f}%"


def table(results: dict) -> str:
    """One row per model: pink fidelity (colour and shape; colour alone) and held-out fidelity."""
    lines = ["| model | training | pink: colour and shape | pink: colour | held-out: colour and shape "
             "| held-out: colour |", "| --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        run = result.get("run")
        trained = "-"
        if run:
            trained = f"{run['steps']} steps of {run['batch']}, lr {run['lr']:g}, {run['seconds']:.0f} s"
        pink, held = result["pink"], result["held_out"]
        figures = [pink["colour_and_shape"], pink["colour"], held["colour_and_shape"], held["colour"]]
        lines.append(f"| {name} | {trained} | " + " | ".join(percent(f) for f in figures) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("quickstart", help="a quickstart folder (its pipeline/ is the base)")
    parser.add_argument("--out", help="where to write (default QUICKSTART/finetune)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time cap of each method")
    parser.add_argument("--max-steps", type=int, default=100_000, help="step cap of each method")
    parser.add_argument("--images", type=int, default=400, help="pink training images")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--lr-full", type=float, default=5e-4)
    parser.add_argument("--seeds", type=int, default=8, help="images per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = Path(args.quickstart) / PIPELINE
    if not (base / "model_index.json").is_file():
        raise LdmError(f"{base} is not a pipeline: run `ldm quickstart {args.quickstart}` first")
    out = Path(args.out) if args.out else Path(args.quickstart) / "finetune"
    data = out / "pink"
    if not (data / "train" / "metadata.jsonl").is_file():
        make_shapes_dataset(data, n=args.images, size=IMAGE_SIZE, seed=DATA_SEED, colours=[NEW_COLOUR])

    results = {"base (before)": measure(base, out / "samples" / "base", args)}
    for method in METHODS:
        export, run = fine_tune(method, base, data, out, args)
        samples = out / "samples" / method
        if method == "lora":
            scores = measure(base, samples, args, loras=[LoraChoice(str(export))])
        else:
            scores = measure(export, samples, args)
        name = f"LoRA (rank {args.rank})" if method == "lora" else "full fine-tune"
        results[name] = {**scores, "run": run}

    print(table(results))
    report = {"settings": vars(args), "results": results}
    (out / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'finetune.json'}; samples in {out / 'samples'}")


if __name__ == "__main__":
    main()
