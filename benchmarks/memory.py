"""Training memory of a diffusion UNet: weights, gradients, optimizer state and one step's activations.

    python -m benchmarks memory                      # both UNets below, batches 1 and 2, extrapolated
    python -m benchmarks memory --models ldm_kl_f8_256 --batches 1 2 4

Two UNets, built with random weights (nothing is downloaded):
  ldm_kl_f8_256   the `unet:` of configs/diffusion/ldm_kl_f8_256.yaml on its 32x32x4 latents (256 px,
                  f=8), with a 768-wide text encoder (CLIP ViT-L/14's; stage 1b's is smaller)
  sd15            Stable Diffusion 1.5's UNet (block_out_channels 320/640/1280/1280, cross-attention
                  768) on 64x64x4 latents (512 px)

Weights and gradients are fp32 (as `bf16-mixed` keeps them). Optimizer state per parameter is
measured by running each optimizer for one step on a tensor of every parameter's shape and summing
the state it keeps (torch's AdamW, transformers' Adafactor as `train.optimizer: adafactor` sets it
up); bitsandbytes' AdamW8bit, which needs a GPU, is counted from its documented layout instead: one
byte for each of its two moments, a float32 absmax per block of 256 values, and 32-bit moments for
tensors under 4096 values.

Activation memory is measured, not modelled: the peak resident memory of the process during one
forward and backward pass (VmHWM, reset before the step through /proc/self/clear_refs) minus the
resident memory before it. Each gradient is dropped as soon as it is made (a post-accumulate hook),
so the figure is the activations and the step's temporaries, not the gradients (their own column).
Why resident memory and not torch's profiler: the profiler's CPU memory events are per operator, not a
timeline one can take the peak of, and it slows a step severalfold. For resident memory to follow
the tensors, each measurement runs in a fresh process with glibc's malloc told to map every block over
64 KiB on its own (MALLOC_MMAP_THRESHOLD_), so that freed tensors leave the process at once.
Measured at small batches (default 1 and 2) in fp32 on the CPU, then extrapolated linearly to the
config's batch (activation memory grows linearly with the batch; the fit's intercept is the
batch-independent part). `bf16-mixed` keeps most saved activations in bf16, about half these figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from transformers.optimization import Adafactor

from benchmarks.harness import read_results, subprocess_env
from ldm.stages.registry import load_config

GIB = 2**30
MMAP_THRESHOLD = str(64 * 1024)  # bytes: glibc maps blocks above this on their own, unmapped on free
TEXT_TOKENS = 77
TEXT_WIDTH = 768  # CLIP ViT-L/14, Stable Diffusion 1.x's text encoder
CONFIG = "diffusion/ldm_kl_f8_256.yaml"
SD15 = dict(block_out_channels=[320, 640, 1280, 1280],
            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            layers_per_block=2, attention_head_dim=8, norm_num_groups=32)
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps 32-bit state for tensors smaller than this
BNB_BLOCK = 256  # values per quantization block, each with a float32 absmax


def model_spec(name: str) -> dict:
    """UNet keyword arguments, latent side and the batch to extrapolate to."""
    cfg = load_config(CONFIG)
    if name == "ldm_kl_f8_256":
        unet = cfg.unet
        sizes = dict(block_out_channels=unet.block_out_channels, down_block_types=unet.down_block_types,
                     up_block_types=unet.up_block_types, layers_per_block=unet.layers_per_block,
                     attention_head_dim=unet.attention_head_dim, norm_num_groups=unet.norm_num_groups)
        return {"unet": sizes, "latent": cfg.data.resolution // 8, "batch": cfg.data.batch_size}
    if name == "sd15":
        return {"unet": SD15, "latent": 64, "batch": cfg.data.batch_size}
    raise SystemExit(f"unknown model {name!r}: choose ldm_kl_f8_256 or sd15")


def build_unet(spec: dict) -> UNet2DConditionModel:
    sizes = {key: tuple(value) if isinstance(value, list) else value for key, value in spec["unet"].items()}
    return UNet2DConditionModel(sample_size=spec["latent"], in_channels=4, out_channels=4,
                                cross_attention_dim=TEXT_WIDTH, **sizes)


# ---- optimizer state ------------------------------------------------------------------------------

def measured_state_bytes(make_optimizer, shape: torch.Size) -> int:
    """Bytes of state an optimizer keeps for one parameter of this shape, after one step."""
    parameter = torch.nn.Parameter(torch.zeros(shape))
    parameter.grad = torch.full(shape, 1e-3)
    optimizer = make_optimizer([parameter])
    optimizer.step()
    return sum(value.numel() * value.element_size() for state in optimizer.state.values()
               for value in state.values() if torch.is_tensor(value) and value.ndim > 0)


def adamw8bit_bytes(numel: int) -> int:
    if numel < BNB_MIN_8BIT_SIZE:
        return 2 * 4 * numel
    return 2 * (numel + 4 * -(-numel // BNB_BLOCK))


def optimizer_bytes(unet: UNet2DConditionModel) -> dict[str, int]:
    shapes = [p.shape for p in unet.parameters()]
    makers = {
        "adamw": lambda params: torch.optim.AdamW(params, lr=1e-4),
        "adafactor": lambda params: Adafactor(params, lr=1e-4, scale_parameter=False, relative_step=False,
                                              warmup_init=False),
    }
    totals = {name: sum(measured_state_bytes(make, shape) for shape in shapes)
              for name, make in makers.items()}
    totals["adamw8bit"] = sum(adamw8bit_bytes(shape.numel()) for shape in shapes)
    return totals


# ---- activations ----------------------------------------------------------------------------------

def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def activation_bytes(unet: UNet2DConditionModel, batch: int, latent: int, checkpointing: bool) -> int:
    """Peak resident memory of one training step above what the process held before it."""
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, 4, latent, latent, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    text = torch.randn(batch, TEXT_TOKENS, TEXT_WIDTH, generator=generator)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak resident memory, to the current resident memory
    prediction = unet(latents, timesteps, encoder_hidden_states=text).sample
    torch.nn.functional.mse_loss(prediction, latents).backward()
    return _status("VmHWM") - before


def measure(name: str, batches: list[int]) -> dict:
    """Everything for one model (run in its own process: see the module's docstring)."""
    torch.manual_seed(0)
    spec = model_spec(name)
    unet = build_unet(spec).train()
    for parameter in unet.parameters():  # gradients are their own column: drop each once made
        parameter.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
    params = sum(p.numel() for p in unet.parameters())
    result = {"model": name, "latent": spec["latent"], "batch": spec["batch"], "parameters": params,
              "weights": 4 * params, "gradients": 4 * params, "optimizer": optimizer_bytes(unet),
              "activations": {}}
    activation_bytes(unet, min(batches), spec["latent"], False)  # one-time allocations (kernel caches)
    for checkpointing in (False, True):
        for batch in batches:
            start = time.perf_counter()
            used = activation_bytes(unet, batch, spec["latent"], checkpointing)
            result["activations"][f"{checkpointing}-{batch}"] = used
            print(f"  {name} batch {batch} checkpointing {checkpointing}: {used / GIB:.2f} GiB "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return result


# ---- extrapolation and the table -----------------------------------------------------------------

def fit(points: dict[int, int]) -> tuple[float, float]:
    """(batch-independent bytes, bytes per image): least squares through (batch, bytes)."""
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def table(results: list[dict], batches: list[int]) -> str:
    rows = ["| UNet (latents) | parameters | weights fp32 | gradients fp32 | AdamW state | AdamW8bit state "
            "| Adafactor state | activations per image, plain / checkpointed | activations at batch B, "
            "plain / checkpointed | total at batch B: AdamW plain / AdamW8bit checkpointed / Adafactor "
            "checkpointed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        acts = {}
        for checkpointing in (False, True):
            points = {b: r["activations"][f"{checkpointing}-{b}"] for b in batches}
            fixed, per_image = fit(points)
            acts[checkpointing] = (per_image, fixed + per_image * r["batch"])
        opt = r["optimizer"]
        base = r["weights"] + r["gradients"]
        totals = [base + opt["adamw"] + acts[False][1], base + opt["adamw8bit"] + acts[True][1],
                  base + opt["adafactor"] + acts[True][1]]
        latent = r["latent"]
        rows.append(
            f"| {r['model']} ({latent}x{latent}x4, B={r['batch']}) | {r['parameters'] / 1e6:.0f} M "
            f"| {gib(r['weights'])} | {gib(r['gradients'])} | {gib(opt['adamw'])} | {gib(opt['adamw8bit'])} "
            f"| {gib(opt['adafactor'])} | {gib(acts[False][0])} / {gib(acts[True][0])} "
            f"| {gib(acts[False][1])} / {gib(acts[True][1])} | " + " / ".join(gib(t) for t in totals) + " |")
    measured = ", ".join(map(str, batches))
    return "\n".join(rows) + f"\n\n(GiB; activations fp32, measured at batches {measured} on the CPU and " \
        "extrapolated linearly)"


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["ldm_kl_f8_256", "sd15"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2], help="measured batch sizes")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one model, in this process


def measure_apart(name: str, args) -> dict:
    """`measure(name)` in a fresh process whose malloc gives freed blocks back (the module's docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "benchmarks", "memory", "--measure", name, "--threads", str(args.threads),
                   "--batches", *map(str, args.batches), "--json", str(results)]
        subprocess.run(command, env=subprocess_env(MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD),
                       stdout=subprocess.DEVNULL, check=True)
        return read_results(results)


def run(args) -> dict:
    if args.measure:
        return measure(args.measure, args.batches)
    if len(set(args.batches)) < 2:
        raise SystemExit("--batches needs at least two sizes to extrapolate from")
    results = [measure_apart(name, args) for name in args.models]
    print(table(results, args.batches))
    return {"models": results}
