"""The latent cache at scale: what encoding costs per image, and one build shared by several processes.

    python -m benchmarks cache encode [--repeats 5]
    python -m benchmarks cache build [--images 2048] [--processes 2]

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

import functools
import io
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import random_models
from benchmarks.harness import CONFIGS, device, median_seconds, subprocess_env
from ldm.data.config import DataConfig
from ldm.data.datamodule import decode_row
from ldm.data.latent_cache.compare import cache_differences
from ldm.data.shapes.generator import make_shapes_dataset
from ldm.data.transforms import preprocess

TEXT_BATCH = 256
AUTOENCODERS = ("kl_f4_shapes.yaml", "kl_f8_256.yaml")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", required=True)
    encode = sub.add_parser("encode")
    encode.add_argument("--repeats", type=int, default=5)
    encode.add_argument("--batch-256", type=int, default=32, help="autoencoder batch at 256 px")
    build = sub.add_parser("build")
    build.add_argument("--images", type=int, default=2048)
    build.add_argument("--processes", type=int, default=2)


def per_item(run, batch: int, repeats: int) -> float:
    """Median seconds per item of `run()` (a batch of `batch`) over `repeats` calls after a warmup call."""
    return median_seconds(run, repeats, warmup=1, on=device()) / batch


@torch.no_grad()
def encoder_cost(encode, inputs: torch.Tensor, repeats: int) -> tuple[int, float, object]:
    """(floating-point operations of `encode` on one input as torch counts them: the basis of a GPU
    estimate where no GPU was measured; median seconds an input in the batch `inputs`; the output of
    one input)."""
    with FlopCounterMode(display=False) as counter:
        one = encode(inputs[:1])
    return counter.get_total_flops(), per_item(functools.partial(encode, inputs), len(inputs), repeats), one


def time_autoencoders(args) -> dict:
    found = {}
    for config, batch in zip(AUTOENCODERS, (64, args.batch_256)):
        torch.manual_seed(0)
        frozen, side = random_models.autoencoder(config)
        frozen = frozen.to(device())
        pixels = torch.rand(batch, 3, side, side, device=device()) * 2 - 1
        flops, seconds, (mean, _) = encoder_cost(frozen.moments, pixels, args.repeats)
        latent_bytes = 2 * mean[0].numel() * 4  # mean and std, fp32
        print(f"autoencoder {config} at {side} px, batch {batch}: {seconds * 1e3:.2f} ms an image "
              f"({flops / 1e9:.1f} GFLOP); latent {tuple(mean.shape[1:])}, {latent_bytes / 1024:.1f} KiB cached "
              "(mean and std, fp32)")
        found[config] = {"seconds_per_image": seconds, "gflop": flops / 1e9, "cached_bytes": latent_bytes}
    return found


def time_text_encoders(args) -> dict:
    found = {}
    for name, text in {"clip_shapes.yaml": random_models.clip_text_sizes(),
                       "ViT-L/14-sized": random_models.VIT_L_TEXT}.items():
        torch.manual_seed(0)
        model = random_models.text_encoder(text).to(device())
        ids = torch.randint(0, random_models.CLIP_VOCAB, (TEXT_BATCH, random_models.TOKENS), device=device())
        flops, seconds, _ = encoder_cost(model, ids, args.repeats)
        embedding_bytes = random_models.TOKENS * text["hidden_size"] * 2  # fp16
        print(f"text encoder {name} ({text['hidden_size']} wide, {text['num_layers']} layers), batch {TEXT_BATCH}: "
              f"{seconds * 1e3:.3f} ms a caption ({flops / 1e9:.2f} GFLOP); {embedding_bytes / 1024:.1f} KiB "
              "cached a caption (fp16)")
        found[name] = {"seconds_per_caption": seconds, "gflop": flops / 1e9, "cached_bytes": embedding_bytes}
    return found


def time_decoding(args) -> dict:
    """What a DataLoader worker does per image before the encoders: a 512x384 JPEG (about what
    256-px training data is stored as) decoded, resized to cover 256x256 and centre-cropped."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (384, 512, 3), np.uint8)).save(buffer, "JPEG", quality=90)
    cfg = DataConfig(source="unused", resolution=256)
    row = {cfg.image_column: {"bytes": buffer.getvalue(), "path": None}}

    def decode_batch():
        for _ in range(16):
            preprocess(decode_row(row, cfg, (256, 256)), (256, 256), True, False, random.Random(0))

    seconds = per_item(decode_batch, 16, args.repeats)
    print(f"decode + resize + crop of a 512x384 JPEG ({len(buffer.getvalue()) / 1024:.0f} KiB) to 256 px, "
          f"one process: {seconds * 1e3:.2f} ms an image")
    return {"seconds_per_image": seconds, "jpeg_bytes": len(buffer.getvalue())}


def encode_times(args) -> dict:
    print(f"device: {device()}, torch threads: {torch.get_num_threads()}")
    return {"autoencoders": time_autoencoders(args), "text_encoders": time_text_encoders(args),
            "decoding": time_decoding(args)}


def ldm_train(launcher: list[str], run_dir: Path, stage1: Path, data: Path) -> list[str]:
    """One training step of ldm_shapes.yaml (building the cache first); the output's [cache] lines,
    then the whole run's time."""
    command = [*launcher, "-m", "ldm", "train", str(CONFIGS / "diffusion" / "ldm_shapes.yaml"), f"run_dir={run_dir}",
               f"vae={stage1 / 'vae'}", f"text_encoder={stage1}", f"data.source={data}", "train.max_steps=1",
               "train.accelerator=cpu", "train.precision=32-true", "samples.prompts=[]", "train.val_every_n_steps=1000"]
    started = time.perf_counter()
    result = subprocess.run(command, env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-3000:])
    lines = sorted(line for line in (result.stdout + result.stderr).splitlines() if line.startswith("[cache]"))
    return [*lines, f"  (whole run {time.perf_counter() - started:.1f} s)"]


def build_times(args) -> dict:
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_shapes_dataset(root / "data", n=args.images, size=32, seed=0)
        stage1 = random_models.stage1(root / "stage1", "kl_f4_shapes.yaml", random_models.clip_text_sizes(),
                                      random_models.shapes_captions(2000))
        accelerate = str(Path(sys.executable).parent / "accelerate")
        launchers = {1: [sys.executable], args.processes: [accelerate, "launch", "--multi_gpu", "--num_processes",
                                                           str(args.processes)]}
        runs = {n: root / f"processes-{n}" for n in launchers}
        for n, launcher in launchers.items():
            found[f"{n} processes"] = ldm_train(launcher, runs[n], stage1, data)
            how = "1 process" if n == 1 else f"{n} processes (accelerate launch)"
            print(f"{args.images} images, {how}:\n" + "\n".join(found[f"{n} processes"]))
        caches = [next((run / "diffusion" / "cache").glob("[!.]*")) for run in runs.values()]
        differences = cache_differences(*caches)
    print("caches equal to the bit" if not differences else f"caches differ: {differences}")
    return {**found, "differences": differences}


def run(args) -> dict:
    return encode_times(args) if args.what == "encode" else build_times(args)
