"""Quality per minute: stage 2 trained for 2, 4 and 8 minutes by ldm and by the plain diffusers loop.

    python -m benchmarks quality-per-minute Q [--minutes 2 4 8] [--out OUT]

Q is a quickstart folder (its vae/, text_encoder/, tokenizer/, clip/ and data/ are the stage-1 models
and the data). For each budget:
- ldm: `ldm train configs/diffusion/ldm_shapes.yaml` with `train.max_minutes` (the run planned to
  its budget, ldm/stages/time_budget.py; the latent cache is built before the clock starts),
- plain: benchmarks/baselines/plain_loop.py (the loop diffusers' train_text_to_image.py runs: every
  step encodes its images and captions, fp32, no caption dropout, min-SNR or noise offset) for the
  same minutes,
both from the same initial UNet (the config's seed) on the same stage-1 models, exported with their
EMA weights and judged on the held-out prompts as the quickstart judges (8 prompts x --n seeds, 20
steps, guidance 4): prompt fidelity (colour and shape) and FID on the run's CLIP features.
Prints a table and writes OUT/quality_per_minute.png and OUT/results.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.baselines.plain_loop import train_and_export  # noqa: E402
from benchmarks.stage2 import judge, quickstart_config, train_ldm  # noqa: E402

WHO = ("ldm", "plain loop")
FIGURES = ("prompt_fidelity", "fid_clip", "sharpness")


def add_arguments(parser) -> None:
    parser.add_argument("quickstart", type=Path, help="a quickstart folder (stage-1 models and data)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--out", type=Path, default=Path("runs/quality_per_minute"))
    parser.add_argument("--n", type=int, default=16, help="images per held-out prompt (default 16)")
    parser.add_argument("--guidance", type=float, default=4.0)


def train(who: str, q: Path, out: Path, minutes: float) -> tuple[Path, int]:
    cfg = quickstart_config(q, out, minutes, ["train.max_steps=1000000"])
    return train_ldm(cfg) if who == "ldm" else train_and_export(cfg, minutes * 60, out / "pipeline")


def plot(rows: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for who, style in zip(WHO, ("o-", "s--")):
        mine = [r for r in rows if r["who"] == who]
        minutes = [r["minutes"] for r in mine]
        axes[0].plot(minutes, [r["prompt_fidelity"] for r in mine], style, label=who)
        axes[1].plot(minutes, [r["fid_clip"] for r in mine], style, label=who)
    axes[0].set(xlabel="training minutes", ylabel="held-out prompt fidelity (%)", ylim=(0, 100))
    axes[1].set(xlabel="training minutes", ylabel="FID (CLIP features), lower is better")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("stage 2 on the quickstart's shapes: quality per minute of training")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'who':<11} {'minutes':>7} {'steps':>6} {'fidelity':>9} {'FID (CLIP)':>10} {'sharpness':>9}")
    for r in rows:
        print(f"{r['who']:<11} {r['minutes']:>7g} {r['steps']:>6} {r['prompt_fidelity']:>8.1f}% "
              f"{r['fid_clip']:>10.4f} {r['sharpness']:>9.3f}")


def run(args) -> dict:
    q = args.quickstart.resolve()
    rows = []
    for minutes in args.minutes:
        for who in WHO:
            out = args.out / f"{who.replace(' ', '_')}-{minutes:g}min"
            start = time.perf_counter()
            pipeline, steps = train(who, q, out, minutes)
            scores = judge(q, pipeline, args.n, args.guidance, pipeline.parent / "samples")
            rows.append({"who": who, "minutes": minutes, "steps": steps,
                         "seconds": round(time.perf_counter() - start, 1), **{k: scores[k] for k in FIGURES}})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.out / "quality_per_minute.png")
    print_table(rows)
    print(f"plot: {args.out / 'quality_per_minute.png'}")
    return {"rows": rows}
