"""Time a training step of the shapes autoencoder and UNet (fp32) with and without speed levers.

    T=1 python scripts/benchmark_step_levers.py ae unet [cl] [compile] [short]

`ae` / `unet`: which models; `cl` adds channels-last, `compile` torch.compile (its compile time
printed), `short` the UNet with 16 text tokens instead of 77; T sets torch's threads (default 2).
The "Speed levers" table of docs/benchmarks.md (session 7) was measured with it."""

import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

torch.set_num_threads(int(os.environ.get("T", "2")))
torch.manual_seed(0)


def bench(name, step, n=12, warm=3):
    for _ in range(warm):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    dt = (time.perf_counter() - t) / n
    print(f"{name:50s} {dt * 1000:8.1f} ms", flush=True)
    return dt


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


what = sys.argv[1:]
if "ae" in what:
    for ch, bs in (([16, 32, 32], 32), ([32, 64, 64], 32), ([16, 32, 32], 64)):
        ae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 3,
            up_block_types=["UpDecoderBlock2D"] * 3,
            block_out_channels=ch,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
        x = torch.randn(bs, 3, 32, 32)
        opt = torch.optim.AdamW(ae.parameters(), 1e-3, fused=True)
        bench(f"ae {ch} b{bs}", ae_step(ae, opt, x))
        if "cl" in what:
            ae2 = copy.deepcopy(ae).to(memory_format=torch.channels_last)
            opt2 = torch.optim.AdamW(ae2.parameters(), 1e-3, fused=True)
            bench(f"ae {ch} b{bs} channels_last", ae_step(ae2, opt2, x, cl=True))
        if "compile" in what:
            ae3 = copy.deepcopy(ae)
            opt3 = torch.optim.AdamW(ae3.parameters(), 1e-3, fused=True)
            t = time.perf_counter()
            ae3.encode = torch.compile(ae3.encode)
            ae3.decode = torch.compile(ae3.decode)
            bench(f"ae {ch} b{bs} compiled (warm)", ae_step(ae3, opt3, x), warm=2)
            print("  incl compile", time.perf_counter() - t)
if "unet" in what:
    for bs in (64, 128):
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=[32, 64],
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1,
            attention_head_dim=4,
            norm_num_groups=16,
            cross_attention_dim=64,
        )
        x = torch.randn(bs, 4, 8, 8)
        emb = torch.randn(bs, 77, 64)
        opt = torch.optim.AdamW(unet.parameters(), 1e-3, fused=True)
        bench(f"unet b{bs}", unet_step(unet, opt, x, emb))
        if "short" in what:
            bench(f"unet b{bs} text 16 tokens", unet_step(unet, opt, x, emb[:, :16].contiguous()))
        if "compile" in what:
            u3 = copy.deepcopy(unet)
            opt3 = torch.optim.AdamW(u3.parameters(), 1e-3, fused=True)
            t = time.perf_counter()
            u3c = torch.compile(u3)
            bench(f"unet b{bs} compiled", unet_step(u3c, opt3, x, emb), warm=2)
            print("  incl compile", time.perf_counter() - t)
