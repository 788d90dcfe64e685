"""`ldm evaluate diffusion`: generate images for a set of prompts and measure them.

    evaluate_diffusion("runs/shapes/pipeline", "data/shapes")       prompt fidelity, CLIP score, FID/KID

The images are scored with a CLIP and compared with the real images of a split by FID and KID; the
same measures on the real images are reported beside them, as the ceiling a model can reach with
this CLIP. The prompts are:
- given (a prompts file), or else
- on the shapes data, its held-out prompts (colour, shape and position combinations that training
  never showed): the images are also read back with the attribute checker (`ldm.data.shapes.checker`)
  for prompt fidelity, or else
- on any other data, the first distinct captions of the split (its images' own descriptions).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from ldm.apps.evaluate.generated import generate_samples, held_out_requests, read_samples, sample_paths
from ldm.apps.evaluate.real_images import RealImages, check_data_folder, load_real
from ldm.apps.evaluate.settings import DEFAULT_SPLIT, GUIDANCE, IMAGES_PER_PROMPT, SAMPLING_STEPS
from ldm.components.clip import load_clip
from ldm.core.errors import LdmError
from ldm.core.images import to_pil, to_tensor
from ldm.core.layout import CLIP, MODEL_CONFIG
from ldm.data.shapes.checker import prompt_fidelity
from ldm.metrics.generation_scores import (
    ClipImageFeatures,
    InceptionFeatures,
    check_inception,
    clip_score,
    extract,
    feature_label,
    fid_kid,
)
from ldm.metrics.image_quality import sharpness_metric
from ldm.metrics.results import Evaluation, Metric
from ldm.sampling.pipeline_io import check_pipeline_folder, image_size, scheduler_config
from ldm.sampling.samplers import check_sampler_follows, default_sampler

MAX_CAPTION_PROMPTS = 16  # prompts taken from the split's captions on data other than shapes
MIN_FID_IMAGES = 2  # real and generated images each, that FID and KID need (ldm.metrics.generation_scores)


def percent(key: str, name: str, fraction: float, note: str = "") -> Metric:
    return Metric(key, name, 100 * fraction, unit="%", better="higher", note=note)


def default_clip(pipeline: str | Path) -> Path | None:
    """RUN/clip beside RUN/pipeline, when stage 1b trained one."""
    path = Path(pipeline).resolve().parent / CLIP
    return path if (path / MODEL_CONFIG).is_file() else None


def fidelity_metrics(images: list[Image.Image], wanted: list[dict], real_images: list[Image.Image],
                     real_wanted: list[dict]) -> list[Metric]:
    generated = prompt_fidelity(images, wanted)
    real = prompt_fidelity(real_images, real_wanted)
    checker = "read by ldm.data.shapes.checker"
    # Per background: a model that draws colours right on black but wrong on white hides in the mean.
    counts = generated["background_counts"]
    by_background = [percent(f"prompt_fidelity_on_{name}", f"Prompt fidelity on a {name} background", share,
                             f"colour and shape, among the {counts[name]} generated images drawn on {name}")
                     for name, share in generated["by_background"].items()]
    return [
        percent("prompt_fidelity", "Prompt fidelity (colour and shape)", generated["colour_and_shape"],
                f"share of generated images whose colour and shape are the prompt's, {checker}"),
        percent("prompt_fidelity_colour", "Prompt fidelity: colour", generated["colour"]),
        percent("prompt_fidelity_shape", "Prompt fidelity: shape", generated["shape"]),
        percent("prompt_fidelity_position", "Prompt fidelity: position", generated["position"]),
        *by_background,
        percent("real_fidelity", "Checker on real held-out images (colour and shape)",
                real["colour_and_shape"], "the same measure on the data's own images: the ceiling"),
    ]


def clip_metrics(clip_path: Path, images: torch.Tensor, prompts: list[str], real: torch.Tensor,
                 real_prompts: list[str], inception: str | None, real_described: str) -> list[Metric]:
    clip, processor = load_clip(clip_path)
    features = InceptionFeatures(inception) if inception else ClipImageFeatures(clip, processor)
    distances = fid_kid(extract(features, real), extract(features, images))
    label, suffix = feature_label(features), ("" if inception else "_clip")
    where = "Inception-v3 pool3" if inception else f"the CLIP image embeddings of {clip_path}"
    return [
        Metric("clip_score", "CLIP score", clip_score(clip, processor, images, prompts).mean(), "", "higher",
               f"100 * max(cos(image, prompt), 0), CLIP of {clip_path}"),
        Metric("real_clip_score", "CLIP score of real held-out images",
               clip_score(clip, processor, real, real_prompts).mean(), "", "higher",
               f"the real images against {real_described}: the ceiling"),
        Metric(f"fid{suffix}", f"FID{label}", distances["fid"], "", "lower",
               f"generated vs real held-out images, on {where}"),
        Metric(f"kid{suffix}", f"KID{label}", distances["kid_mean"], "", "lower",
               f"std over subsets {distances['kid_std']:.2g}; on {where}"),
    ]


def check_diffusion_inputs(pipeline: str, data: str, clip: str | None, inception: str | None,
                           sampler: str | None = None) -> Path | None:
    """Everything that can be wrong before models load; returns the CLIP folder to score with."""
    check_pipeline_folder(pipeline, "make images from prompts alone (ldm evaluate inpainting measures it)")
    if sampler is not None:
        check_sampler_follows(sampler, scheduler_config(pipeline))
    check_data_folder(data)
    if inception is not None:
        check_inception(inception)
    clip_path = Path(clip) if clip else default_clip(pipeline)
    if clip is not None and not (clip_path / "config.json").is_file():
        raise LdmError(f"no CLIP model in {clip_path}: config.json is missing")
    return clip_path


def check_fid_counts(real: int, prompts: int, n: int) -> None:
    """FID and KID compare the spread of two sets of images: one image has none. Said before any
    image is generated."""
    if real < MIN_FID_IMAGES:
        raise LdmError(f"the split has {real} real image(s): FID and KID need at least {MIN_FID_IMAGES} "
                       "(choose another --split)")
    if n * prompts < MIN_FID_IMAGES:
        raise LdmError(f"--n {n} for {prompts} prompt(s) makes {n * prompts} image(s): FID and KID need at least "
                       f"{MIN_FID_IMAGES} (a larger --n, or more prompts)")


def requests_for(real: RealImages, prompts: list[str] | None) -> tuple[list[str], list[dict] | None, str]:
    """(prompts to generate for, the attributes each asks for or None, where the prompts came from)."""
    if prompts is not None:
        return prompts, None, "given"
    if real.attributes is not None:
        held_out, wanted = held_out_requests()
        return held_out, wanted, "the shapes data's held-out combinations"
    distinct = list(dict.fromkeys(p for p in real.prompts if p.strip()))[:MAX_CAPTION_PROMPTS]
    if not distinct:
        raise LdmError("the split's images have no captions to prompt with: pass prompts (--prompts-file)")
    return distinct, None, f"the first {len(distinct)} distinct captions of the split"


@torch.no_grad()
def evaluate_diffusion(pipeline: str, data: str, clip: str | None = None, inception: str | None = None,
                       split: str = DEFAULT_SPLIT, n: int = IMAGES_PER_PROMPT, seed: int = 0,
                       steps: int = SAMPLING_STEPS, guidance: float = GUIDANCE, sampler: str | None = None,
                       samples: str | Path | None = None, generate: bool = True,
                       prompts: list[str] | None = None) -> Evaluation:
    """Generate n images per prompt (into `samples`, else a temporary folder) and score them.

    `prompts` default to the shapes data's held-out prompts, or on other data to the split's
    captions (see the module's docstring). `generate=False` scores the images already in
    `samples` (as written by `generate_samples`).
    """
    start = time.perf_counter()
    if prompts is not None and not prompts:
        raise LdmError("no prompts to evaluate with: the prompts given are empty")
    clip_path = check_diffusion_inputs(pipeline, data, clip, inception, sampler)
    real = load_real(data, split, image_size(pipeline))
    prompts, wanted, prompts_from = requests_for(real, prompts)
    if wanted is None and clip_path is None:
        raise LdmError("nothing to measure: prompt fidelity needs the shapes data's held-out prompts, and "
                       "CLIP score and FID need a CLIP (train stage 1b, or pass --clip)")
    if clip_path is not None:
        check_fid_counts(len(real.pixels), len(prompts), n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(samples) if samples is not None else Path(tmp)
        if generate:
            paths = generate_samples(pipeline, prompts, folder, n, seed, steps, guidance, sampler=sampler)
        else:
            paths = sample_paths(pipeline, prompts, folder, n, seed)
        images = read_samples(paths)
    image_prompts = [p for p in prompts for _ in range(n)]

    metrics = []
    if wanted is not None:
        real_pil = [to_pil(x) for x in real.pixels]
        metrics += fidelity_metrics(images, [w for w in wanted for _ in range(n)], real_pil, real.attributes)
    pixels = torch.stack([to_tensor(image) for image in images])
    metrics.append(sharpness_metric(pixels, real.pixels))
    if clip_path is not None:
        metrics += clip_metrics(clip_path, pixels, image_prompts, real.pixels, real.prompts, inception,
                                real_described="their own captions" if real.attributes is None
                                else "plain prompts of their attributes")
    settings = {"data": str(data), "split": split, "prompts": len(prompts), "prompts_from": prompts_from,
                "images_per_prompt": n, "real_images": len(real.pixels), "seed": seed, "steps": steps,
                "guidance": guidance, "sampler": sampler or default_sampler(scheduler_config(pipeline)),
                "clip": str(clip_path) if clip_path else None, "inception": inception,
                "samples": str(samples) if samples is not None else None}
    if clip_path is None:
        settings["skipped"] = "CLIP score, FID and KID: no CLIP (train stage 1b, or pass --clip)"
    return Evaluation("diffusion", str(pipeline), settings, metrics, time.perf_counter() - start)
