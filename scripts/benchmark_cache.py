"""The latent cache at scale: what encoding costs per image, and one build shared by several processes.

    python scripts/benchmark_cache.py encode [--repeats 5]
    python scripts/benchmark_cache.py build [--images 2048] [--processes 2]

encode: the seconds per image of each encoder the cache runs, randomly initialised (the time does
not depend on the weights), in this process on this machine (CUDA when there is one), median of
--repeats batches after a warmup batch, with the floating-point operations torch counts for one:
- autoencoders: configs/autoencoder/kl_f4_shapes.yaml at 32 px and kl_f8_256.yaml at 256 px, in
  batches of the stage-2 configs' data.batch_size (ldm_shapes 64, ldm_kl_f8_256 32; --batch-256
  for a smaller one on a slow CPU),
- text encoders: the shapes CLIP's (configs/clip/clip_shapes.yaml) and a CLIP ViT-L/14-sized one
  (768 wide, 12 layers, as Stable Diffusion 1.x conditions on), 77 tokens, batches of 256 captions,
- decoding: a 512x384 JPEG decoded, resized and cropped to 256 px as the cache's DataLoader
  workers do it, in one process,
and the bytes a cached image takes (latent moments in fp32, one caption's embeddings in fp16).

build: the cache of --images shapes images (32 px, the shapes autoencoder, the shapes CLIP's text
encoder, all random) built by `ldm train configs/diffusion/ldm_shapes.yaml` in one process, then
under `accelerate launch --multi_gpu --num_processes N` (gloo on a CPU), each with one thread per
process and one training step; prints each process's "[cache]" line (its share, its encode time,
its wait) and checks that the two caches are equal to the bit.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from ldm.components.autoencoder import FrozenAutoencoder
from ldm.data.config import DataConfig
from ldm.data.datamodule import decode_row
from ldm.data.latent_cache import cache_differences
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.data.transforms import preprocess
from ldm.stages.autoencoder.module import build_autoencoder
from ldm.stages.clip.tokenizer import train_tokenizer
from ldm.stages.registry import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TOKENS = 77
TEXT_BATCH = 256
VIT_L_TEXT = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}
PLACEHOLDERS = ["run_dir=/tmp/unused", "data.source=/tmp/unused"]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seconds_per_item(run, batch: int, repeats: int) -> float:
    """Median seconds per item of `run()` over `repeats` calls (after one warmup call)."""
    run()
    times = []
    for _ in range(repeats):
        if device().type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device().type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / batch


def counted(run) -> tuple[int, object]:
    """(floating-point operations of `run()` as torch counts them, its result): the basis of a GPU
    estimate where no GPU was measured."""
    with FlopCounterMode(display=False) as counter:
        result = run()
    return counter.get_total_flops(), result


def autoencoder(config: str) -> tuple[FrozenAutoencoder, int]:
    cfg = load_config(CONFIGS / "autoencoder" / config, PLACEHOLDERS)
    torch.manual_seed(0)
    return FrozenAutoencoder(build_autoencoder(cfg.model, cfg.data.resolution)).to(device()), cfg.data.resolution


def text_encoder(text: dict) -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=text["hidden_size"], num_hidden_layers=text["num_layers"],
                            num_attention_heads=text["num_heads"], intermediate_size=text["intermediate_size"],
                            max_position_embeddings=TOKENS)
    return CLIPTextModel(config).eval().requires_grad_(False).to(device())


def time_autoencoders(args) -> None:
    for config, batch in (("kl_f4_shapes.yaml", 64), ("kl_f8_256.yaml", args.batch_256)):
        frozen, side = autoencoder(config)
        pixels = torch.rand(batch, 3, side, side, device=device()) * 2 - 1
        with torch.no_grad():
            flops, (mean, _) = counted(functools.partial(frozen.moments, pixels[:1]))
            per_image = seconds_per_item(functools.partial(frozen.moments, pixels), batch, args.repeats)
        latent_bytes = 2 * mean[0].numel() * 4  # mean and std, fp32
        print(f"autoencoder {config} at {side} px, batch {batch}: {per_image * 1e3:.2f} ms an image "
              f"({flops / 1e9:.1f} GFLOP); latent {tuple(mean.shape[1:])}, {latent_bytes / 1024:.1f} KiB cached "
              "(mean and std, fp32)")


def time_text_encoders(args) -> None:
    shapes = load_config(CONFIGS / "clip" / "clip_shapes.yaml", PLACEHOLDERS).model.text
    texts = {"clip_shapes.yaml": {name: getattr(shapes, name) for name in VIT_L_TEXT},
             "ViT-L/14-sized": VIT_L_TEXT}
    for name, text in texts.items():
        model = text_encoder(text)
        ids = torch.randint(0, 49408, (TEXT_BATCH, TOKENS), device=device())
        with torch.no_grad():
            flops, _ = counted(functools.partial(model, ids[:1]))
            per_caption = seconds_per_item(functools.partial(model, ids), TEXT_BATCH, args.repeats)
        embedding_bytes = TOKENS * text["hidden_size"] * 2  # fp16
        print(f"text encoder {name} ({text['hidden_size']} wide, {text['num_layers']} layers), batch {TEXT_BATCH}: "
              f"{per_caption * 1e3:.3f} ms a caption ({flops / 1e9:.2f} GFLOP); {embedding_bytes / 1024:.1f} KiB "
              "cached a caption (fp16)")


def time_decoding(args) -> None:
    """What a DataLoader worker does per image before the encoders: a 512x384 JPEG (about what
    256-px training data is stored as) decoded, resized to cover 256x256 and centre-cropped."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 512, 3), np.uint8)).save(buffer, "JPEG", quality=90)
    cfg = DataConfig(source="unused", resolution=256)
    row = {cfg.image_column: {"bytes": buffer.getvalue(), "path": None}}

    def decode_batch():
        for _ in range(16):
            preprocess(decode_row(row, cfg, (256, 256)), (256, 256), True, False, random.Random(0))

    per_image = seconds_per_item(decode_batch, 16, args.repeats)
    print(f"decode + resize + crop of a 512x384 JPEG ({len(buffer.getvalue()) / 1024:.0f} KiB) to 256 px, "
          f"one process: {per_image * 1e3:.2f} ms an image")


def encode_times(args) -> None:
    print(f"device: {device()}, torch threads: {torch.get_num_threads()}")
    time_autoencoders(args)
    time_text_encoders(args)
    time_decoding(args)


def random_stage1(run: Path, captions: list[str]) -> None:
    """RUN/vae, RUN/text_encoder, RUN/tokenizer: the shapes configs' models, randomly initialised."""
    frozen, _ = autoencoder("kl_f4_shapes.yaml")
    frozen.vae.save_pretrained(run / "vae")
    clip = load_config(CONFIGS / "clip" / "clip_shapes.yaml", PLACEHOLDERS)
    tokenizer = train_tokenizer(captions, clip.tokenizer.vocab_size)
    torch.manual_seed(0)
    text = clip.model.text
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text.hidden_size, num_hidden_layers=text.num_layers,
        num_attention_heads=text.num_heads, intermediate_size=text.intermediate_size,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).save_pretrained(run / "text_encoder")
    tokenizer.save_pretrained(run / "tokenizer")


def ldm_train(launcher: list[str], run_dir: Path, stage1: Path, data: Path) -> str:
    """One training step of ldm_shapes.yaml (building the cache first); the output's [cache] lines."""
    command = [*launcher, "-m", "ldm", "train", str(CONFIGS / "diffusion" / "ldm_shapes.yaml"), f"run_dir={run_dir}",
               f"vae={stage1 / 'vae'}", f"text_encoder={stage1}", f"data.source={data}", "train.max_steps=1",
               "train.accelerator=cpu", "train.precision=32-true", "samples.prompts=[]", "train.val_every_n_steps=1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-3000:])
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("[cache]")]
    return "\n".join(sorted(lines)) + f"\n  (whole run {time.perf_counter() - started:.1f} s)"


def build_times(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_shapes_dataset(root / "data", n=args.images, size=32, seed=0)
        captions = [line for line in (data / "train" / "metadata.jsonl").read_text().splitlines()][:2000]
        random_stage1(root / "stage1", captions)
        accelerate = str(Path(sys.executable).parent / "accelerate")
        runs = {1: root / "one", args.processes: root / "several"}
        print(f"{args.images} images, 1 process:\n" + ldm_train([sys.executable], runs[1], root / "stage1", data))
        launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", str(args.processes)]
        print(f"{args.images} images, {args.processes} processes (accelerate launch):\n"
              + ldm_train(launcher, runs[args.processes], root / "stage1", data))
        caches = [next((run / "diffusion" / "cache").glob("[!.]*")) for run in runs.values()]
        differences = cache_differences(*caches)
        print("caches equal to the bit" if not differences else f"caches differ: {differences}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    encode = sub.add_parser("encode")
    encode.add_argument("--repeats", type=int, default=5)
    encode.add_argument("--batch-256", type=int, default=32, help="autoencoder batch at 256 px")
    build = sub.add_parser("build")
    build.add_argument("--images", type=int, default=2048)
    build.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    encode_times(args) if args.what == "encode" else build_times(args)


if __name__ == "__main__":
    main()
