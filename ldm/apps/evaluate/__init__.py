"""`ldm evaluate`: measure an autoencoder, a diffusion pipeline or a walk, one module each.

    evaluate_autoencoder("runs/shapes/vae", "data/shapes")          PSNR, SSIM (+ codebook usage, VQ)
    evaluate_diffusion("runs/shapes/pipeline", "data/shapes")       prompt fidelity, CLIP score, FID/KID
    evaluate_inpainting("runs/shapes/pipeline")                     fidelity inside a mask, PSNR outside it
    evaluate_walk("walks/demo")                                     smoothness of the walk's frames

Each returns an `ldm.metrics.results.Evaluation` (the JSON schema is documented there). The real
images they compare with are `real_images`'s; the images generated for a set of prompts, and their
prompt fidelity on the shapes data, are `generated`'s (the quickstart's samples step uses it too).
`ldm evaluate` runs one through `evaluate(settings)` (`run`): its options are a model of
`settings`, and where it writes is checked before any model loads (`outputs`).
"""

import importlib

# Each function from its module, imported when first asked for: `ldm evaluate X -h` reads the
# defaults from `settings`, and importing this package must not load torch and diffusers for it.
MODULE_OF = {"evaluate": "run", "evaluate_autoencoder": "autoencoder", "evaluate_diffusion": "diffusion",
             "evaluate_inpainting": "inpainting",
             "evaluate_walk": "walk"}
__all__ = list(MODULE_OF)


def __getattr__(name: str):
    if name not in MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{MODULE_OF[name]}"), name)
