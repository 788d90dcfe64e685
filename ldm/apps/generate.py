"""`ldm generate`: images from prompts with a trained RUN/pipeline, as PNGs with their settings.

Every image has its own seed: image i of a prompt uses `seed + i`, drawn from its own generator,
so any one image can be made again alone (`--seed 10 --n 1` remakes image 3 of `--seed 7 --n 4`).
Files are named by prompt index and seed (`0002-seed10.png`) and carry prompt, negative prompt,
seed, steps, guidance, sampler and model path in the PNG (`ldm.core.images.read_png_metadata`),
and the LoRAs it was made with (`--lora DIR --lora-scale S`, checked against the pipeline's UNet
before any model loads). With `--init-image` it starts from that image; with `--mask` too, it
repaints only the mask's white part and keeps the rest: any pipeline by blending its latents
(`ldm.sampling.inpaint`), an inpainting model (stage 2's `inpainting:`) by itself, as
`StableDiffusionInpaintPipeline` does; both then laid over the init image. What it is
asked for is a `GenerateOptions` (ldm/apps/generate_settings.py).

Under `accelerate launch`, the prompts are shared out among the processes; each writes only its own
images, and the main process writes the contact sheet once all have finished.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

import torch
from accelerate.utils import broadcast_object_list
from PIL import Image
from tqdm.auto import tqdm

from ldm.apps.generate_settings import Dtype, GenerateOptions
from ldm.apps.processes import inference_processes
from ldm.components.prompt_tokens import chunk_counts
from ldm.core.errors import LdmError
from ldm.core.images import contact_sheet, read_rgb, write_png
from ldm.core.layout import SAMPLES
from ldm.core.model_kind import is_inpainting
from ldm.core.outputs import fresh_folder, refuse_earlier_results
from ldm.data.decode import read_image_file
from ldm.sampling import pipeline_io
from ldm.sampling.inpaint import check_mask_size, read_mask
from ldm.sampling.lora import LoraChoice, check_loras
from ldm.sampling.pipeline_io import (
    check_autoencoder_swap,
    check_image_size,
    check_pipeline_folder,
    check_prompts,
    vae_factor,
)
from ldm.sampling.samplers import check_sampler_follows, default_sampler, guidance_rescale_of
from ldm.sampling.text_to_image import sampling_pipeline, seeded_images

DTYPES = {name: getattr(torch, name) for name in get_args(Dtype)}
GRID_NAME = "grid.png"


@dataclass(frozen=True)
class ImageJob:
    prompt_index: int
    prompt: str
    seed: int

    @property
    def file_name(self) -> str:
        return f"{self.prompt_index:04d}-seed{self.seed}.png"


# ---- reading and checking what the user asked for (before any model is loaded) ----------------

def read_prompts(prompts: list[str], prompts_file: str | None) -> list[str]:
    """The prompts given on the command line (an empty one, "", is the unconditional prompt), then
    those of the file (one per line, blank lines skipped)."""
    prompts = list(prompts)
    if prompts_file:
        path = Path(prompts_file)
        if not path.is_file():
            raise LdmError(f"prompts file not found: {path}")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return prompts


def check_options(opts: GenerateOptions) -> None:
    """Raise LdmError for the first problem found; reads configs only, never weights."""
    check_pipeline_folder(opts.pipeline, None if opts.mask else
                          "make images without a mask to repaint: give --init-image IMG and --mask MASK")
    check_repaint(opts.pipeline, opts.repaint)
    if not opts.prompts:
        raise LdmError("no prompts: give prompts as arguments or --prompts-file with one per line")
    if opts.negative and opts.guidance <= 1:
        raise LdmError(f"--negative needs --guidance above 1 (got {opts.guidance}): without guidance "
                       "the negative prompt has no effect")
    if opts.negative and pipeline_io.is_distilled(opts.pipeline):
        raise LdmError(f"--negative has no effect on {opts.pipeline}: it is distilled, with guidance folded into "
                       "its UNet (no unconditional pass for a negative prompt to replace)")
    scheduler = pipeline_io.scheduler_config(opts.pipeline)
    if opts.sampler is None:  # the pipeline's own, written into the PNGs as used
        opts.sampler = default_sampler(scheduler)
    check_sampler_follows(opts.sampler, scheduler)
    if opts.device is not None:
        try:
            torch.device(opts.device)
        except RuntimeError:
            raise LdmError(f"--device {opts.device!r} is not a device torch knows (cpu, cuda, cuda:1, mps)") from None
    check_image_size(vae_factor(opts.pipeline), opts.height, opts.width)
    if opts.init_image is not None:
        init = load_init_image(opts.init_image)
        if opts.mask is not None:
            check_mask_size(read_mask(opts.mask), init.size, opts.mask)
    elif opts.mask is not None:
        raise LdmError("--mask needs --init-image: the mask marks the part of that image to repaint")
    if opts.repaint and opts.mask is None:
        raise LdmError("--repaint needs --mask: it resamples the masked part")
    check_loras(opts.loras, opts.pipeline)
    check_prompts(opts.pipeline, opts.prompts + [opts.negative], opts.prompt_chunks, opts.embeddings)
    if opts.vae is not None:
        check_autoencoder_swap(opts.pipeline, opts.vae)


def check_repaint(pipeline: str, repaint: int) -> None:
    if repaint and is_inpainting(pipeline):
        raise LdmError(f"--repaint resamples the blended latents of a text-to-image pipeline; {pipeline} "
                       "is an inpainting model, which takes the mask itself (leave --repaint out)")


def load_init_image(path: str) -> Image.Image:
    return read_image_file(path, "--init-image")


def plan(opts: GenerateOptions) -> list[ImageJob]:
    """Every image to make, in prompt order: prompt p, image i has seed `seed + i`."""
    return [ImageJob(p, prompt, opts.seed + i) for p, prompt in enumerate(opts.prompts) for i in range(opts.n)]


def output_folder(opts: GenerateOptions) -> Path:
    return Path(opts.out) if opts.out else Path(opts.pipeline).resolve().parent / SAMPLES


def claim_output_folder(opts: GenerateOptions, jobs: list[ImageJob], state) -> Path:
    """Where this run writes, checked before any process writes anything: an --out that holds
    images or a grid this run would replace is refused; without --out, samples/ beside the pipeline,
    or samples-2/, samples-3/, ... when an earlier run's images are there (they are kept). Decided by
    the main process, so every process writes to the same folder; `opts.out` is set to it."""
    if opts.out:
        refuse_earlier_results(opts.out, [job.file_name for job in jobs] + [GRID_NAME], "--out")
        folder = Path(opts.out)
    else:
        folder = [fresh_folder(output_folder(opts)) if state.is_main_process else None]
        folder = broadcast_object_list(folder)[0] if state.num_processes > 1 else folder[0]
    state.wait_for_everyone()  # every process has checked before any writes
    opts.out = str(folder)
    return folder


# ---- metadata ----------------------------------------------------------------------------------

def image_metadata(opts: GenerateOptions, job: ImageJob) -> dict[str, str]:
    meta = {"prompt": job.prompt, "negative_prompt": opts.negative, "seed": job.seed, "steps": opts.steps,
            "guidance": opts.guidance, "sampler": opts.sampler,
            "model": str(Path(opts.pipeline).resolve())}
    if opts.guidance_rescale:
        meta["guidance_rescale"] = opts.guidance_rescale
    if opts.sampler == "ddim":
        meta["eta"] = opts.eta
    if opts.init_image is not None:
        meta.update(init_image=str(Path(opts.init_image).resolve()), strength=opts.strength)
    if opts.mask is not None:
        meta.update(mask=str(Path(opts.mask).resolve()), feather=opts.feather, repaint=opts.repaint)
    if opts.loras:
        meta["loras"] = json.dumps([asdict(LoraChoice(str(Path(lora.path).resolve()), lora.scale))
                                    for lora in opts.loras])
    if opts.vae is not None:
        meta["vae"] = str(Path(opts.vae).resolve())
    if opts.prompt_chunks is not None:
        meta["prompt_chunks"] = opts.prompt_chunks
    if opts.embeddings:
        meta["embeddings"] = json.dumps([str(Path(path).resolve()) for path in opts.embeddings])
    return {key: str(value) for key, value in meta.items()}


# ---- generating ----------------------------------------------------------------------------------

def generate(opts: GenerateOptions) -> list[Path]:
    """Make the images of this process's share of the prompts; return the files it wrote."""
    check_options(opts)
    state = inference_processes(opts.device)
    jobs = plan(opts)
    out = claim_output_folder(opts, jobs, state)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only place, a file on the way
        raise LdmError(f"cannot write to {out}: {err.strerror or err}") from None
    with state.split_between_processes(list(range(len(opts.prompts)))) as my_prompts:
        my_prompts = set(my_prompts)
    mine = [job for job in jobs if job.prompt_index in my_prompts]
    try:
        written = _generate_jobs(opts, mine, out, device=_process_device(opts.device, state),
                                 show_progress=state.is_main_process) if mine else []
    except BaseException:
        if created and state.is_main_process and not any(out.iterdir()):
            out.rmdir()  # a failed run leaves no empty folder behind
        raise
    state.wait_for_everyone()
    if state.is_main_process:
        write_contact_sheet(opts, jobs, out)
    return written


def _process_device(device: str | None, state) -> torch.device:
    """An explicit device index is obeyed; otherwise each process takes its own (cuda:rank)."""
    if device is not None and torch.device(device).index is not None:
        return torch.device(device)
    return state.device


def prepared_pipeline(opts: GenerateOptions, device=None):
    """The pipeline loaded as `opts` asks (dtype, LoRAs, autoencoder, sampler), quiet; `opts.guidance_rescale`
    set to the one it samples with."""
    if opts.sampler is None:  # callers that skip `check_options` (ldm evaluate inpainting): the pipeline's own
        opts.sampler = default_sampler(pipeline_io.scheduler_config(opts.pipeline))
    pipe = sampling_pipeline(opts.pipeline, opts.sampler, dtype=DTYPES[opts.dtype], device=device, loras=opts.loras,
                             vae=opts.vae, prompt_chunks=opts.prompt_chunks, embeddings=opts.embeddings)
    if opts.guidance_rescale is None:  # the pipeline's own, written into the PNGs as used
        opts.guidance_rescale = guidance_rescale_of(pipe.scheduler.config)
    return pipe


def _generate_jobs(opts: GenerateOptions, jobs: list[ImageJob], out: Path, device,
                   show_progress: bool) -> list[Path]:
    pipe = prepared_pipeline(opts, device)
    height, width = output_size(opts, pipe)
    init = mask = None
    if opts.init_image is not None:
        init = load_init_image(opts.init_image).resize((width, height), Image.Resampling.LANCZOS)
        if opts.mask is not None:  # to the generated size, as the init image
            mask = read_mask(opts.mask).resize((width, height), Image.Resampling.LANCZOS)

    written = []
    with tqdm(total=len(jobs), unit="image", desc="generating", disable=not show_progress) as bar:
        for batch in batches_of_one_length(jobs, opts, pipe):
            images = seeded_images(pipe, [job.prompt for job in batch], [job.seed for job in batch],
                                   feather=opts.feather, **sampling_settings(opts, pipe, init, mask))
            for job, image in zip(batch, images):
                written.append(write_png(out / job.file_name, image, image_metadata(opts, job)))
            bar.update(len(batch))
    return written


def batches_of_one_length(jobs: list[ImageJob], opts: GenerateOptions, pipe) -> list[list[ImageJob]]:
    """The jobs in batches of at most `batch_size`, each of prompts of one window count: a batch's
    embeddings are padded to its longest prompt (`ldm.components.text_encoder.embed_prompts`), so a
    short prompt batched with a long one would give another image than alone."""
    counts = chunk_counts(pipe.prompt_tokenizer, [job.prompt for job in jobs] + [opts.negative], pipe.prompt_chunks)
    length = {job: max(count, counts[-1]) for job, count in zip(jobs, counts)}
    batches = []
    for count in sorted(set(length.values())):
        same = [job for job in jobs if length[job] == count]
        batches += [same[i:i + opts.batch_size] for i in range(0, len(same), opts.batch_size)]
    return batches


def output_size(opts: GenerateOptions, pipe) -> tuple[int, int]:
    """(height, width) of the images: the options', else the model's."""
    return opts.height or pipe.image_size, opts.width or pipe.image_size


def sampling_settings(opts: GenerateOptions, pipe, init: Image.Image | None = None,
                      mask: Image.Image | None = None) -> dict:
    """`ldm.sampling.text_to_image.decoded_images`' keywords as `opts` sets them."""
    height, width = output_size(opts, pipe)
    return dict(steps=opts.steps, guidance=opts.guidance, height=height, width=width, negative=opts.negative,
                eta=opts.eta, guidance_rescale=opts.guidance_rescale, init=init, strength=opts.strength, mask=mask,
                repaint=opts.repaint)


def write_contact_sheet(opts: GenerateOptions, jobs: list[ImageJob], out: Path) -> Path:
    """out/grid.png: one row per prompt, the prompt written under its images."""
    rows = []
    for index, prompt in enumerate(opts.prompts):
        images = [read_rgb(out / job.file_name) for job in jobs if job.prompt_index == index]
        rows.append((f"{index}: {prompt}", images))
    return write_png(out / GRID_NAME, contact_sheet(rows))
