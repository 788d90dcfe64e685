"""Stage 1b: train the shapes CLIP for a few minutes, then score it.

    python -m benchmarks clip                       # 3 minutes of training, then the figures
    python -m benchmarks clip --run runs/shapes --skip-train    # score an existing run

Prints the training steps and rate, zero-shot colour / shape / position accuracy on the held-out
combinations (DATA/test), and image-to-text / text-to-image top-1 retrieval within batches of 64
on freshly drawn shapes images that training never saw (a different seed).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.harness import add_overrides
from ldm.components.clip import load_clip
from ldm.data.config import DataConfig
from ldm.data.labelled import load_labelled_images
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.metrics.clip_accuracy import batched_retrieval_top1, shapes_zero_shot
from ldm.stages.registry import load_config, train_stage

ATTRIBUTES = ["colour", "shape", "position"]


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="configs/clip/clip_shapes.yaml")
    parser.add_argument("--data", default="data/shapes", help="made if missing: 10000 images, 32 px, seed 0")
    parser.add_argument("--run", default=None, help="run folder (default: a fresh temporary one)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time limit")
    parser.add_argument("--skip-train", action="store_true", help="only score RUN/clip")
    parser.add_argument("--batch", type=int, default=64, help="retrieval batch size")
    parser.add_argument("--eval-images", type=int, default=640, help="fresh images for retrieval")
    add_overrides(parser)


def train(args, run: Path) -> dict:
    cfg = load_config(args.config, [f"run_dir={run}", f"data.source={args.data}",
                                    f"train.max_minutes={args.minutes}", *args.overrides])
    start = time.time()
    train_stage(cfg)
    seconds = time.time() - start
    metrics = pd.read_csv(cfg.stage_dir / "csv" / "metrics.csv")
    steps = int(metrics["step"].max()) + 1
    print(f"trained {steps} steps in {seconds:.0f} s (including validation and export): "
          f"{steps / seconds:.2f} steps/s")
    return {"steps": steps, "seconds": round(seconds, 1)}


def score(args, run: Path) -> dict:
    clip, processor = load_clip(run / "clip")
    resolution = clip.config.vision_config.image_size
    held_out = DataConfig(source=args.data, split="test", resolution=resolution)
    pixels, labels = load_labelled_images(held_out, ATTRIBUTES)
    accuracy = shapes_zero_shot(clip, processor.tokenizer, pixels, labels, processor)
    print(f"zero-shot on {len(pixels)} held-out images: "
          + ", ".join(f"{name} {accuracy[name]:.1%}" for name in ATTRIBUTES))

    with tempfile.TemporaryDirectory() as tmp:
        fresh = make_shapes_dataset(Path(tmp) / "shapes", n=args.eval_images, size=resolution, seed=1)
        pixels, labels = load_labelled_images(DataConfig(source=str(fresh), resolution=resolution), ["text"])
    image_to_text, text_to_image = batched_retrieval_top1(clip, processor.tokenizer, pixels, labels["text"],
                                                          args.batch, processor)
    print(f"retrieval top-1 in batches of {args.batch} ({len(pixels) // args.batch} batches of unseen "
          f"images): image-to-text {image_to_text:.1%}, text-to-image {text_to_image:.1%}")
    return {"zero_shot": {name: accuracy[name] for name in ATTRIBUTES},
            "retrieval_top1": {"image_to_text": image_to_text, "text_to_image": text_to_image}}


def run(args) -> dict:
    if not Path(args.data).exists():
        make_shapes_dataset(args.data, n=10000, size=32, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else Path(tmp) / "run"
        trained = {} if args.skip_train else train(args, run_dir)
        return {**trained, **score(args, run_dir)}
