"""`ldm evaluate autoencoder`: PSNR and SSIM of an autoencoder's reconstructions of real images
(and, for a VQ autoencoder, how much of its codebook it uses). On the shapes data, also the
attribute checker on the reconstructions: a diffusion model in this autoencoder's latent space
cannot show a colour its decoder does not give back, so this is the ceiling of its prompt fidelity
(a quickstart autoencoder at 26.7 dB scored 73% here, and its pipeline 59%: docs/benchmarks.md).

    evaluate_autoencoder("runs/shapes/vae", "data/shapes", grid="reconstructions.png")
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ldm.apps.evaluate.outputs import writing
from ldm.apps.evaluate.real_images import load_real
from ldm.apps.evaluate.settings import DEFAULT_SPLIT, MAX_REAL_IMAGES
from ldm.components.autoencoder import load_vae, reconstruct
from ldm.core.images import image_grid, to_pil, write_png
from ldm.data.shapes.checker import prompt_fidelity
from ldm.metrics.image_quality import psnr, sharpness_metric, ssim
from ldm.metrics.results import Evaluation, Metric
from ldm.stages.autoencoder.codebook import perplexity, usage

GRID_COLUMNS = 8
GRID_UPSCALE = 4  # 32 px images are too small to judge at their own size


@torch.no_grad()
def evaluate_autoencoder(vae_path: str, data: str, split: str = DEFAULT_SPLIT,
                         max_images: int | None = MAX_REAL_IMAGES, batch_size: int = 32,
                         grid: str | Path | None = None) -> Evaluation:
    """PSNR and SSIM of reconstructions (and codebook usage for VQ); `grid`: originals over them."""
    start = time.perf_counter()
    vae = load_vae(vae_path)
    real = load_real(data, split, vae.config.sample_size, max_images, captions=False)
    pixels = real.pixels
    psnrs, ssims, counts, shown, read_back, reconstructions = [], [], None, None, [], []
    for i in range(0, len(pixels), batch_size):
        batch = pixels[i:i + batch_size]
        rec, indices = reconstruct(vae, batch)
        psnrs.append(psnr(rec, batch))
        ssims.append(ssim(rec, batch))
        reconstructions.append(rec)
        if real.attributes is not None:
            read_back += [to_pil(image) for image in rec]
        shown = rec[:GRID_COLUMNS] if shown is None else shown
        if indices is not None:
            codes = vae.config.num_vq_embeddings
            counts = torch.bincount(indices, minlength=codes) + (0 if counts is None else counts)
    if grid is not None:
        with writing("--grid", grid):
            write_png(grid, image_grid([pixels[:GRID_COLUMNS], shown], upscale=GRID_UPSCALE),
                      {"rows": "originals, reconstructions", "autoencoder": str(vae_path)})
    metrics = [
        Metric("psnr", "PSNR", torch.cat(psnrs).mean(), "dB", "higher",
               "mean over images of 10 log10(1 / MSE), pixels in [0, 1]"),
        Metric("ssim", "SSIM", torch.cat(ssims).mean(), "", "higher",
               "mean over images; 11x11 Gaussian window, sigma 1.5"),
        # Samples cannot be crisper than the decoder draws them: the ceiling of the pipeline's sharpness.
        sharpness_metric(torch.cat(reconstructions), pixels, "reconstructions"),
    ]
    if read_back:
        metrics.append(Metric("reconstruction_fidelity", "Checker on reconstructions (colour and shape)",
                              100 * prompt_fidelity(read_back, real.attributes)["colour_and_shape"], "%",
                              "higher", "the shapes checker on the decoded images: the ceiling of a "
                              "pipeline's prompt fidelity in this latent space"))
    if counts is not None:
        metrics += [Metric("codebook_usage", "Codebook usage", 100 * usage(counts), "%", "higher",
                           f"share of the {len(counts)} codes chosen at least once"),
                    Metric("codebook_perplexity", "Codebook perplexity", perplexity(counts), "", "higher",
                           "exp(entropy) of code use: how many equally used codes it is worth")]
    settings = {"data": str(data), "split": split, "images": len(pixels),
                "autoencoder": type(vae).__name__, "resolution": vae.config.sample_size}
    return Evaluation("autoencoder", str(vae_path), settings, metrics, time.perf_counter() - start)
