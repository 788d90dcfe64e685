"""Time a training step of the shapes autoencoder and UNet (fp32) with and without speed levers.

    python -m benchmarks step-levers ae unet [cl] [compile] [short] [--threads 1]

`ae` / `unet`: which models; `cl` adds channels-last, `compile` torch.compile (its compile time
printed), `short` the UNet with 16 text tokens instead of 77. Each figure is the mean of 12 steps
after 3 (compiled: 2) untimed ones. The "Speed levers" table of docs/benchmarks.md (session 7) was
measured with it.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from benchmarks.harness import timings

AUTOENCODERS = (([16, 32, 32], 32), ([32, 64, 64], 32), ([16, 32, 32], 64))  # (channels, batch)
UNET_BATCHES = (64, 128)


def add_arguments(parser) -> None:
    parser.add_argument("what", nargs="+", choices=["ae", "unet", "cl", "compile", "short"],
                        help="models (ae, unet) and levers (cl: channels-last, compile, short: 16 tokens)")


def bench(name: str, step, n: int = 12, warm: int = 3) -> float:
    seconds = statistics.mean(timings(step, n, warmup=warm))
    print(f"{name:50s} {seconds * 1000:8.1f} ms", flush=True)
    return seconds


def ae_step(model, opt, x, cl=False):
    def step():
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        post = model.encode(xx).latent_dist
        rec = model.decode(post.sample()).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def unet_step(unet, opt, x, emb, cl=False):
    def step():
        t = torch.randint(0, 1000, (x.shape[0],))
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        out = unet(xx, t, encoder_hidden_states=emb).sample
        loss = F.mse_loss(out, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def optimizer(model):
    return torch.optim.AdamW(model.parameters(), 1e-3, fused=True)


def compiled(name: str, make_step) -> dict:
    """`make_step()`'s step timed once compiled, and the seconds with the compile included."""
    start = time.perf_counter()
    seconds = bench(name, make_step(), warm=2)
    total = time.perf_counter() - start
    print("  incl compile", total)
    return {name: seconds, f"{name} incl compile": total}


def autoencoders(what: list[str]) -> dict:
    found = {}
    for ch, bs in AUTOENCODERS:
        ae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                           up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=ch, layers_per_block=1,
                           latent_channels=4, norm_num_groups=8, sample_size=32)
        x = torch.randn(bs, 3, 32, 32)
        found[f"ae {ch} b{bs}"] = bench(f"ae {ch} b{bs}", ae_step(ae, optimizer(ae), x))
        if "cl" in what:
            ae2 = copy.deepcopy(ae).to(memory_format=torch.channels_last)
            name = f"ae {ch} b{bs} channels_last"
            found[name] = bench(name, ae_step(ae2, optimizer(ae2), x, cl=True))
        if "compile" in what:
            ae3 = copy.deepcopy(ae)

            def make_step(ae3=ae3, x=x):
                ae3.encode, ae3.decode = torch.compile(ae3.encode), torch.compile(ae3.decode)
                return ae_step(ae3, optimizer(ae3), x)

            found.update(compiled(f"ae {ch} b{bs} compiled (warm)", make_step))
    return found


def unets(what: list[str]) -> dict:
    found = {}
    for bs in UNET_BATCHES:
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=[32, 64],
                                    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                                    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], layers_per_block=1,
                                    attention_head_dim=4, norm_num_groups=16, cross_attention_dim=64)
        x, emb = torch.randn(bs, 4, 8, 8), torch.randn(bs, 77, 64)
        opt = optimizer(unet)
        found[f"unet b{bs}"] = bench(f"unet b{bs}", unet_step(unet, opt, x, emb))
        if "short" in what:
            name = f"unet b{bs} text 16 tokens"
            found[name] = bench(name, unet_step(unet, opt, x, emb[:, :16].contiguous()))
        if "compile" in what:
            u3 = copy.deepcopy(unet)
            found.update(compiled(f"unet b{bs} compiled",
                                  lambda u3=u3, x=x, emb=emb: unet_step(torch.compile(u3), optimizer(u3), x, emb)))
    return found


def run(args) -> dict:
    torch.manual_seed(0)
    found = {}
    if "ae" in args.what:
        found.update(autoencoders(args.what))
    if "unet" in args.what:
        found.update(unets(args.what))
    return {"seconds_per_step": found}
