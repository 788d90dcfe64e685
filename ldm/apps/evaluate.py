"""`ldm evaluate`: measure an autoencoder, a diffusion pipeline or a walk.

    evaluate_autoencoder("runs/shapes/vae", "data/shapes")          PSNR, SSIM (+ codebook usage, VQ)
    evaluate_diffusion("runs/shapes/pipeline", "data/shapes")       prompt fidelity, CLIP score, FID/KID
    evaluate_walk("walks/demo")                                     smoothness of the walk's frames

Each returns an `ldm.metrics.results.Evaluation` (the JSON schema is documented there).

The diffusion evaluation generates images for a set of prompts, scores them with a CLIP and
compares them with the real images of a split by FID and KID; the same measures on the real images
are reported beside them, as the ceiling a model can reach with this CLIP. The prompts are:
- given (a prompts file), or else
- on the shapes data, its held-out prompts (colour, shape and position combinations that training
  never showed): the images are also read back with the attribute checker (`ldm.data.shapes.checker`)
  for prompt fidelity, or else
- on any other data, the first distinct captions of the split (its images' own descriptions).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ldm.core.errors import LdmError
from ldm.metrics.results import Evaluation, Metric

DEFAULT_SPLIT = "test"  # the shapes data's held-out combinations
MAX_REAL_IMAGES = 512
SHAPES_COLUMNS = ["colour", "shape", "position"]  # what the attribute checker reads
MAX_CAPTION_PROMPTS = 16  # prompts taken from the split's captions on data other than shapes
GRID_COLUMNS = 8
GRID_UPSCALE = 4  # 32 px images are too small to judge at their own size


# ---- shared ----------------------------------------------------------------------------------

def load_images(data: str, split: str, resolution: int, max_images: int | None,
                columns: list[str] = ()) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """[-1, 1] images of a split (centre-cropped to `resolution`) and the values of `columns`."""
    from ldm.data.config import DataConfig
    from ldm.data.labelled import load_labelled_images

    if not Path(data).exists():
        raise LdmError(f"data folder not found: {data}")
    return load_labelled_images(DataConfig(source=str(data), split=split, resolution=resolution),
                                list(columns), max_images)


def percent(key: str, name: str, fraction: float, note: str = "") -> Metric:
    return Metric(key, name, 100 * fraction, unit="%", better="higher", note=note)


# ---- autoencoder -----------------------------------------------------------------------------

@torch.no_grad()
def reconstruct(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(reconstructions, code indices or None): as the export decodes, the posterior mode for KL."""
    from diffusers import VQModel

    if isinstance(vae, VQModel):
        h = vae.encode(pixels).latents
        _, _, (_, _, indices) = vae.quantize(h)
        return vae.decode(h).sample, indices.flatten()  # decode quantizes h, as the pipeline does
    return vae(pixels).sample, None


@torch.no_grad()
def evaluate_autoencoder(vae_path: str, data: str, split: str = DEFAULT_SPLIT,
                         max_images: int | None = MAX_REAL_IMAGES, batch_size: int = 32,
                         grid: str | Path | None = None) -> Evaluation:
    """PSNR and SSIM of reconstructions (and codebook usage for VQ); `grid`: originals over them."""
    from ldm.components.autoencoder import load_vae
    from ldm.core.images import image_grid, write_png
    from ldm.metrics.image_quality import psnr, ssim
    from ldm.stages.autoencoder.codebook import perplexity, usage

    start = time.perf_counter()
    vae = load_vae(vae_path)
    pixels, _ = load_images(data, split, vae.config.sample_size, max_images)
    psnrs, ssims, counts, shown = [], [], None, None
    for i in range(0, len(pixels), batch_size):
        batch = pixels[i:i + batch_size]
        rec, indices = reconstruct(vae, batch)
        psnrs.append(psnr(rec, batch))
        ssims.append(ssim(rec, batch))
        shown = rec[:GRID_COLUMNS] if shown is None else shown
        if indices is not None:
            codes = vae.config.num_vq_embeddings
            counts = torch.bincount(indices, minlength=codes) + (0 if counts is None else counts)
    if grid is not None:
        write_png(grid, image_grid([pixels[:GRID_COLUMNS], shown], upscale=GRID_UPSCALE),
                  {"rows": "originals, reconstructions", "autoencoder": str(vae_path)})
    metrics = [
        Metric("psnr", "PSNR", torch.cat(psnrs).mean(), "dB", "higher",
               "mean over images of 10 log10(1 / MSE), pixels in [0, 1]"),
        Metric("ssim", "SSIM", torch.cat(ssims).mean(), "", "higher",
               "mean over images; 11x11 Gaussian window, sigma 1.5"),
    ]
    if counts is not None:
        metrics += [percent("codebook_usage", "Codebook usage", usage(counts),
                            f"share of the {len(counts)} codes chosen at least once"),
                    Metric("codebook_perplexity", "Codebook perplexity", perplexity(counts), "", "higher",
                           "exp(entropy) of code use: how many equally used codes it is worth")]
    settings = {"data": str(data), "split": split, "images": len(pixels),
                "autoencoder": type(vae).__name__, "resolution": vae.config.sample_size}
    return Evaluation("autoencoder", str(vae_path), settings, metrics, time.perf_counter() - start)


# ---- diffusion -------------------------------------------------------------------------------

def default_clip(pipeline: str | Path) -> Path | None:
    """RUN/clip beside RUN/pipeline, when stage 1b trained one."""
    path = Path(pipeline).resolve().parent / "clip"
    return path if (path / "config.json").is_file() else None


def held_out_requests() -> tuple[list[str], list[dict[str, str]]]:
    """The shapes data's held-out prompts and the attributes each one asks for."""
    from ldm.data.shapes.generator import HELD_OUT, held_out_prompts

    attributes = [{"colour": c, "shape": s, "position": p} for c, s, p in HELD_OUT]
    return held_out_prompts(), attributes


def generate_samples(pipeline: str, prompts: list[str], out: str | Path, n: int, seed: int,
                     steps: int, guidance: float, loras: list = ()) -> list[Path]:
    """n images per prompt in `out` (PNGs with their settings, and grid.png), through `ldm generate`
    (with `loras`, `ldm.sampling.lora.LoraChoice`s, loaded onto the pipeline)."""
    from ldm.apps.generate import GenerateOptions, generate, plan

    opts = GenerateOptions(pipeline=str(pipeline), prompts=prompts, out=str(out), n=n, seed=seed,
                           steps=steps, guidance=guidance, loras=list(loras))
    generate(opts)
    return [Path(out) / job.file_name for job in plan(opts)]


def shapes_fidelity(pipeline: str, prompts: list[str], attributes: list[dict], out: str | Path,
                    n: int = 8, seed: int = 0, steps: int = 20, guidance: float = 4.0,
                    loras: list = ()) -> dict[str, float]:
    """Prompt fidelity for any shapes prompts: n images per prompt generated into `out`, read back
    by the attribute checker (the shares right for colour, shape, both and position)."""
    from ldm.data.shapes.checker import prompt_fidelity

    images = read_samples(generate_samples(pipeline, prompts, out, n, seed, steps, guidance, loras))
    return prompt_fidelity(images, [wanted for wanted in attributes for _ in range(n)])


def read_samples(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        if not path.is_file():
            raise LdmError(f"generated image missing: {path}")
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def fidelity_metrics(images: list[Image.Image], wanted: list[dict], real_images: list[Image.Image],
                     real_wanted: list[dict]) -> list[Metric]:
    from ldm.data.shapes.checker import prompt_fidelity

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


def sharpness_metrics(images: torch.Tensor, real: torch.Tensor) -> list[Metric]:
    """How crisp the samples are against the real held-out images (ldm.metrics.image_quality.sharpness)."""
    from ldm.metrics.image_quality import sharpness

    generated, reference = sharpness(images).mean(), sharpness(real).mean()
    return [Metric("sharpness", "Edge sharpness (generated / real)", generated / reference, "", "higher",
                   f"mean gradient of each image's strongest 5% of pixels: generated {generated:.3f}, real "
                   f"held-out images {reference:.3f}; below 1: blurrier than the data")]


def clip_metrics(clip_path: Path, images: torch.Tensor, prompts: list[str], real: torch.Tensor,
                 real_prompts: list[str], inception: str | None, real_described: str) -> list[Metric]:
    from ldm.components.clip import load_clip
    from ldm.metrics.generation_scores import (
        ClipImageFeatures,
        InceptionFeatures,
        clip_score,
        extract,
        feature_label,
        fid_kid,
    )

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


def check_diffusion_inputs(pipeline: str, data: str, clip: str | None, inception: str | None) -> Path | None:
    """Everything that can be wrong before models load; returns the CLIP folder to score with."""
    from ldm.metrics.generation_scores import check_inception
    from ldm.sampling.pipeline_io import check_pipeline_folder

    check_pipeline_folder(pipeline)
    if not Path(data).exists():
        raise LdmError(f"data folder not found: {data}")
    if inception is not None:
        check_inception(inception)
    clip_path = Path(clip) if clip else default_clip(pipeline)
    if clip is not None and not (clip_path / "config.json").is_file():
        raise LdmError(f"no CLIP model in {clip_path}: config.json is missing")
    return clip_path


@dataclass
class RealImages:
    """The real images of a split: pixels in [-1, 1], a prompt describing each, and on the shapes
    data the attributes each shows (None on other data)."""

    pixels: torch.Tensor
    prompts: list[str]
    attributes: list[dict[str, str]] | None


def load_real(data: str, split: str, resolution: int) -> RealImages:
    """The split's images, described by their shapes attributes when it has them, else by their captions."""
    from ldm.data.captions import captions_of
    from ldm.data.config import DataConfig
    from ldm.data.labelled import load_labelled_images
    from ldm.data.shapes.generator import plain_prompt
    from ldm.data.sources import load_source

    cfg = DataConfig(source=str(data), split=split, resolution=resolution)
    ds = load_source(cfg)  # loaded once: its columns decide what describes the images
    if all(column in ds.column_names for column in SHAPES_COLUMNS):
        pixels, labels = load_labelled_images(cfg, SHAPES_COLUMNS, MAX_REAL_IMAGES, ds)
        attributes = [dict(zip(SHAPES_COLUMNS, values)) for values in zip(*labels.values())]
        prompts = [plain_prompt(a["colour"], a["shape"], a["position"]) for a in attributes]
        return RealImages(pixels, prompts, attributes)
    pixels, labels = load_labelled_images(cfg, [cfg.caption_column], MAX_REAL_IMAGES, ds)
    return RealImages(pixels, [captions_of(value)[0] for value in labels[cfg.caption_column]], None)


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
                       split: str = DEFAULT_SPLIT, n: int = 8, seed: int = 0, steps: int = 20,
                       guidance: float = 4.0, samples: str | Path | None = None,
                       generate: bool = True, prompts: list[str] | None = None) -> Evaluation:
    """Generate n images per prompt (into `samples`, else a temporary folder) and score them.

    `prompts` default to the shapes data's held-out prompts, or on other data to the split's
    captions (see the module's docstring). `generate=False` scores the images already in
    `samples` (as written by `generate_samples`).
    """
    from ldm.core.images import to_pil, to_tensor
    from ldm.sampling.pipeline_io import image_size

    start = time.perf_counter()
    if prompts is not None and not prompts:
        raise LdmError("no prompts to evaluate with: the prompts given are empty")
    clip_path = check_diffusion_inputs(pipeline, data, clip, inception)
    real = load_real(data, split, image_size(pipeline))
    prompts, wanted, prompts_from = requests_for(real, prompts)
    if wanted is None and clip_path is None:
        raise LdmError("nothing to measure: prompt fidelity needs the shapes data's held-out prompts, and "
                       "CLIP score and FID need a CLIP (train stage 1b, or pass --clip)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(samples) if samples is not None else Path(tmp)
        if generate:
            paths = generate_samples(pipeline, prompts, folder, n, seed, steps, guidance)
        else:
            from ldm.apps.generate import GenerateOptions, plan

            jobs = plan(GenerateOptions(pipeline=str(pipeline), prompts=prompts, n=n, seed=seed))
            paths = [folder / job.file_name for job in jobs]
        images = read_samples(paths)
    image_prompts = [p for p in prompts for _ in range(n)]

    metrics = []
    if wanted is not None:
        real_pil = [to_pil(x) for x in real.pixels]
        metrics += fidelity_metrics(images, [w for w in wanted for _ in range(n)], real_pil, real.attributes)
    pixels = torch.stack([to_tensor(image) for image in images])
    metrics += sharpness_metrics(pixels, real.pixels)
    if clip_path is not None:
        metrics += clip_metrics(clip_path, pixels, image_prompts, real.pixels, real.prompts, inception,
                                real_described="their own captions" if real.attributes is None
                                else "plain prompts of their attributes")
    settings = {"data": str(data), "split": split, "prompts": len(prompts), "prompts_from": prompts_from,
                "images_per_prompt": n, "real_images": len(real.pixels), "seed": seed, "steps": steps,
                "guidance": guidance, "clip": str(clip_path) if clip_path else None, "inception": inception,
                "samples": str(samples) if samples is not None else None}
    if clip_path is None:
        settings["skipped"] = "CLIP score, FID and KID: no CLIP (train stage 1b, or pass --clip)"
    return Evaluation("diffusion", str(pipeline), settings, metrics, time.perf_counter() - start)


# ---- walks -----------------------------------------------------------------------------------

def evaluate_walk(folder: str | Path) -> Evaluation:
    """Smoothness of a rendered walk: `ldm.apps.animate.render`'s report, recomputed from the frames
    on disk. With audio, unevenness is measured against the audio target (the motion is meant to
    follow it, not to be constant), beside the correlation of distance and target."""
    from ldm.apps.animate import render as animate
    from ldm.apps.animate import video
    from ldm.apps.animate.settings import saved_walk_settings

    start = time.perf_counter()
    folder = Path(folder)
    s = saved_walk_settings(folder)
    plan = animate.saved_plan(s, folder)
    count = plan.frames
    frames_dir = folder / animate.FRAMES_DIR
    missing = set(range(count)) - video.existing_frames(frames_dir)
    if missing:
        raise LdmError(f"{frames_dir} lacks {len(missing)} of its {count} frames: finish the render first "
                       "(rerun the same ldm animate command)")
    report = animate.smoothness_report(s, plan, folder, video.read_frames(frames_dir, count))
    walk = report["walk"]
    distance = f"adjacent-frame {report['distance']}"
    if "audio" in report:
        metrics = [
            Metric("walk_cv", "Motion unevenness against the audio (CV of distance / audio target)",
                   report["audio"]["cv"], "", "lower", f"std / mean of the {distance} over the audio target"),
            Metric("walk_audio_correlation", "Correlation of frame-to-frame distance and audio target",
                   report["audio"]["correlation"], "", "higher", "Pearson, over the walk's steps"),
            Metric("walk_distance_cv", "CV of frame-to-frame distance", walk["cv"], "", "",
                   "uneven by design: the motion follows the audio"),
        ]
    else:
        metrics = [Metric("walk_cv", "Motion unevenness (CV of frame-to-frame distance)", walk["cv"], "",
                          "lower", f"std / mean of the {distance}")]
    metrics += [
        Metric("walk_mean_step", "Mean frame-to-frame distance", walk["mean"], "", ""),
        Metric("walk_max_step", "Largest frame-to-frame distance", walk["max"], "", "lower"),
        Metric("walk_frames", "Frames", report["frames"], "", ""),
    ]
    if "closing" in walk:
        metrics.append(Metric("walk_closing_step", "Loop closing step (last to first frame)", walk["closing"],
                              "", "lower"))
    if "linear" in report:
        metrics += [Metric("walk_linear_cv", "Motion unevenness with linear spacing", report["linear"]["cv"],
                           "", "lower", "the same walk with frames evenly spaced in latent space"),
                    Metric("walk_cv_ratio", "Re-spaced CV / linear CV", report["cv_ratio"], "", "lower")]
    settings = {"kind": s.kind, "frames": report["frames"], "fps": plan.fps, "loop": s.loop,
                "motion": s.motion, "audio": s.audio, "distance": report["distance"]}
    return Evaluation("walk", str(folder), settings, metrics, time.perf_counter() - start)
