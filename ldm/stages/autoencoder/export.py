"""The autoencoder's export, on global rank 0 after training (RUN = run_dir):

    RUN/vae/    save_pretrained in safetensors, with `scaling_factor` (and `shift_factor`, for KL
                with `latent_scale.shift`) measured on the data: 1 / std of the latents, as latent
                diffusion's `scale_by_std` does, so the diffusion stage sees unit-variance latents.
                With `train.decoder_only` the encoder did not change, and neither did its latents:
                the loaded model's factors are kept (a UNet trained on them stays valid).

It loads with AutoencoderKL / VQModel.from_pretrained and with `ldm.components.autoencoder.load_vae`."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ldm.components import autoencoder as vae_lib
from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError
from ldm.data.datamodule import ImageCaptionDataModule
from ldm.stages.autoencoder.module import AutoencoderModule


@torch.no_grad()
def measure_latent_scale(vae: vae_lib.Autoencoder, loader, samples: int, shift: bool) -> tuple[float, float]:
    """(scaling_factor, shift_factor) so that (z - shift) * scale has unit std over the data."""
    latents, seen = [], 0
    for batch in loader:
        pixels = batch["pixel_values"][: samples - seen].to(vae.device, vae.dtype)
        # flattened: with aspect-ratio buckets each batch's latents have their own shape
        latents.append(vae_lib.encode_unscaled(vae, pixels).float().cpu().flatten())
        seen += len(pixels)
        if seen >= samples:
            break
    if not latents:
        raise LdmError("no training images to measure the latent scale on")
    z = torch.cat(latents)
    mean = z.mean().item() if shift else 0.0
    std = (z - mean).std().item()
    if not math.isfinite(std) or std <= 0:
        raise LdmError(f"the latents' standard deviation over {len(z)} training images is {std}: the autoencoder "
                       "encodes every image alike (or to NaN), so no scaling factor can make them unit-variance; "
                       "it has not learned, and is not exported")
    return 1.0 / std, mean


def set_latent_scale(vae: vae_lib.Autoencoder, scaling_factor: float,
                     shift_factor: float | None) -> vae_lib.Autoencoder:
    """Record the factors in the autoencoder's config, where `encode`, `decode` and every later stage
    read them (a VQ model has no shift)."""
    vae.register_to_config(scaling_factor=scaling_factor)
    if isinstance(vae, AutoencoderKL):
        vae.register_to_config(shift_factor=shift_factor)
    return vae


def save_vae(vae: vae_lib.Autoencoder, out_dir: str | Path, scaling_factor: float,
               shift_factor: float | None) -> Path:
    """Write RUN/vae with save_pretrained (safetensors), whole or not at all."""
    set_latent_scale(vae, scaling_factor, shift_factor)
    with atomic_folder(out_dir) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    return Path(out_dir)


def export(module: AutoencoderModule, datamodule: ImageCaptionDataModule, out_dir: Path) -> Path:
    """Measure the latent scale on training images (or keep it, when only the decoder trained) and
    export the autoencoder to `out_dir` (RUN/vae)."""
    cfg = module.cfg
    vae = module.vae.eval()
    if cfg.train.decoder_only:
        scale, shift = vae.config.scaling_factor, getattr(vae.config, "shift_factor", None)
        how = "kept from the pretrained model"
    else:
        scale, mean = measure_latent_scale(vae, datamodule.train_dataloader(), cfg.latent_scale.samples,
                                           cfg.latent_scale.shift)
        shift = mean if cfg.latent_scale.shift else None
        how = "measured"
    out = save_vae(vae, out_dir, scale, shift)
    print(f"autoencoder: scaling_factor={scale:.4f}" + (f" shift_factor={shift:.4f}" if shift else "")
          + f" ({how}), exported to {out}")
    return out


