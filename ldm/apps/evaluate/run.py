"""`ldm evaluate`: one settings model in (`ldm.apps.evaluate.settings`), its Evaluation out, and
with `out` written as JSON too. Where it writes is checked first (`ldm.apps.evaluate.outputs`).

    evaluate(WalkEvaluation(folder="walks/demo", out="walks/demo-smoothness.json"))
"""

from __future__ import annotations

from pathlib import Path

from ldm.apps.evaluate.autoencoder import evaluate_autoencoder
from ldm.apps.evaluate.diffusion import evaluate_diffusion
from ldm.apps.evaluate.inpainting import evaluate_inpainting
from ldm.apps.evaluate.outputs import check_outputs, writing
from ldm.apps.evaluate.settings import (
    AutoencoderEvaluation,
    DiffusionEvaluation,
    InpaintingEvaluation,
    WalkEvaluation,
)
from ldm.apps.evaluate.walk import evaluate_walk
from ldm.core.errors import LdmError
from ldm.metrics.results import Evaluation, write_json


def evaluate(s: AutoencoderEvaluation | DiffusionEvaluation | InpaintingEvaluation | WalkEvaluation) -> Evaluation:
    check_outputs(s)
    if isinstance(s, AutoencoderEvaluation):
        result = evaluate_autoencoder(s.vae, s.data, split=s.split, max_images=s.max_images, grid=s.grid)
    elif isinstance(s, DiffusionEvaluation):
        prompts = read_prompts_file(s.prompts_file) if s.prompts_file is not None else None
        result = evaluate_diffusion(s.pipeline, s.data, clip=s.clip, inception=s.inception, split=s.split, n=s.n,
                                    seed=s.seed, steps=s.steps, guidance=s.guidance, sampler=s.sampler,
                                    samples=s.samples, prompts=prompts)
    elif isinstance(s, InpaintingEvaluation):
        result = evaluate_inpainting(s.pipeline, cases=s.cases, n=s.n, seed=s.seed, steps=s.steps, guidance=s.guidance,
                                     strength=s.strength, feather=s.feather, repaint=s.repaint, samples=s.samples)
    else:
        result = evaluate_walk(s.folder)
    if s.out is not None:
        with writing("--out", s.out):
            write_json(result, s.out)
    return result


def read_prompts_file(path: str) -> list[str]:
    """The prompts of a --prompts-file (one a line, as `ldm generate` reads them)."""
    from ldm.apps.generate import read_prompts

    if not Path(path).is_file():
        raise LdmError(f"--prompts-file {path or repr(path)}: no such file")
    try:
        prompts = read_prompts([], path)
    except UnicodeDecodeError:  # a binary file given by mistake
        raise LdmError(f"--prompts-file {path} is not a text file of prompts (not UTF-8)") from None
    if not prompts:
        raise LdmError(f"--prompts-file {path} holds no prompts (give one a line)")
    return prompts
