"""Merge torchvision's VGG16 weights and lpips' linear heads into one file for `loss.lpips_weights`.

    python tools/make_lpips_weights.py vgg16-397923af.pth lpips_vgg_v0.1.pth lpips_vgg16.safetensors

Both inputs are plain state dicts that the user already has (torchvision caches the first in
~/.cache/torch/hub/checkpoints, the lpips package ships the second as lpips/weights/v0.1/vgg.pth).
They are read with weights_only=True, so no code in them runs.
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import save_file

from ldm.stages.autoencoder.lpips import LPIPS, vgg16_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vgg16", help="torchvision VGG16 state dict (.pth)")
    parser.add_argument("lpips_heads", help="lpips' vgg.pth (lin0..lin4)")
    parser.add_argument("out", help="safetensors file to write")
    args = parser.parse_args()
    vgg = torch.load(args.vgg16, map_location="cpu", weights_only=True)
    heads = torch.load(args.lpips_heads, map_location="cpu", weights_only=True)
    wanted = vgg16_features().state_dict()
    merged = {f"features.{k}": vgg[f"features.{k}"].contiguous() for k in wanted}
    merged.update({k: v.contiguous() for k, v in heads.items() if k.startswith("lin")})
    save_file(merged, args.out)
    LPIPS(args.out)  # fails loudly now, not at training time, if a key is missing
    print(f"wrote {args.out} ({len(merged)} tensors)")


if __name__ == "__main__":
    main()
