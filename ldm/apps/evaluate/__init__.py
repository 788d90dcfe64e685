"""`ldm evaluate`: measure an autoencoder, a diffusion pipeline or a walk, one module each.

    evaluate_autoencoder("runs/shapes/vae", "data/shapes")          PSNR, SSIM (+ codebook usage, VQ)
    evaluate_diffusion("runs/shapes/pipeline", "data/shapes")       prompt fidelity, CLIP score, FID/KID
    evaluate_walk("walks/demo")                                     smoothness of the walk's frames

Each returns an `ldm.metrics.results.Evaluation` (the JSON schema is documented there). The real
images they compare with are `real_images`'s; the images generated for a set of prompts, and their
prompt fidelity on the shapes data, are `generated`'s (the quickstart's samples step uses it too).
`ldm evaluate` runs one through `evaluate(settings)` (`run`): its options are a model of
`settings`, and where it writes is checked before any model loads (`outputs`).
"""

from ldm.apps.evaluate.autoencoder import evaluate_autoencoder
from ldm.apps.evaluate.diffusion import evaluate_diffusion
from ldm.apps.evaluate.run import evaluate
from ldm.apps.evaluate.walk import evaluate_walk

__all__ = ["evaluate", "evaluate_autoencoder", "evaluate_diffusion", "evaluate_walk"]
