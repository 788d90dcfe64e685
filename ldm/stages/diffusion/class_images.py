"""The class images of DreamBooth's prior preservation (`data.prior_preservation`), made once.

The base pipeline (`pretrained:`, before any fine-tuning) draws `num_class_images` images of the
class prompt with `ldm generate`'s code (`ldm.sampling.text_to_image`: its default sampler, image i
from seed + i) at data.resolution, into RUN/diffusion/class_images/:

    0000-seed0.png, 0001-seed1.png, ...   each with its prompt, seed, steps, guidance, sampler and
                                          model in its PNG metadata, as `ldm generate` writes them
    metadata.jsonl                        {"file_name": ..., "text": class prompt}: an imagefolder,
                                          which the data layer reads like the user's own images
    class_images.json                     what they were made from (the note below)

The folder is written whole or not at all. A later run (a resumed one, or a new one in the same
folder) whose note is the same reuses it; any change (prompt, count, settings, the base UNet's
weights) makes it again. Under several processes the main one makes it and the others wait for it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ldm.core.atomic import atomic_folder
from ldm.core.images import write_png
from ldm.core.layout import UNET
from ldm.data.config import PriorPreservationConfig
from ldm.sampling.lora import unet_fingerprint
from ldm.sampling.samplers import DEFAULT_SAMPLER, guidance_rescale_of
from ldm.sampling.text_to_image import sampling_pipeline, seeded_images
from ldm.stages.diffusion.config import Config
from ldm.stages.faults import main_process
from ldm.stages.resume import rng_states, set_rng_states

CLASS_IMAGES = "class_images"  # in RUN/diffusion/
NOTE = "class_images.json"
METADATA = "metadata.jsonl"
BATCH = 8  # images per pipeline call
WAIT_SECONDS = 2.0  # how often a process that does not make the images looks for them


def class_images_folder(cfg: Config) -> Path:
    return cfg.stage_dir / CLASS_IMAGES


def note_of(cfg: Config, pipeline: Path) -> dict:
    """What the class images are made from: a folder with another note is made again."""
    prior: PriorPreservationConfig = cfg.data.prior_preservation
    return {"class_prompt": prior.class_prompt, "num_class_images": prior.num_class_images,
            "steps": prior.steps, "guidance_scale": prior.guidance_scale,
            "negative_prompt": prior.negative_prompt, "seed": prior.seed, "resolution": cfg.data.resolution,
            "sampler": DEFAULT_SAMPLER, "base_unet_sha256": unet_fingerprint(pipeline / UNET)}


def read_note(folder: Path) -> dict | None:
    try:
        return json.loads((folder / NOTE).read_text())
    except (OSError, ValueError):
        return None


def prepare_class_images(cfg: Config, pipeline: Path) -> Path:
    """RUN/diffusion/class_images, made by `pipeline` unless a folder of the same note is there.
    The random generators are left as they were, so that a run trains the same whether it made
    the images or found them."""
    folder = class_images_folder(cfg)
    note = note_of(cfg, pipeline)
    if read_note(folder) == note:
        print(f"[prior preservation] reusing the {note['num_class_images']} class images in {folder}", flush=True)
        return folder
    if not main_process():
        while read_note(folder) != note:  # the main process is making them
            time.sleep(WAIT_SECONDS)
        return folder
    states = rng_states()
    try:
        make_class_images(cfg.data.prior_preservation, note, pipeline, folder)
    finally:
        set_rng_states(states)
    return folder


def make_class_images(prior: PriorPreservationConfig, note: dict, pipeline: Path, folder: Path) -> None:
    device = "cuda" if torch.cuda.is_available() else None
    pipe = sampling_pipeline(pipeline, DEFAULT_SAMPLER, device=device)
    rescale = guidance_rescale_of(pipe.scheduler.config)
    side = note["resolution"]
    seeds = [prior.seed + i for i in range(prior.num_class_images)]
    model = str(pipeline.resolve())
    with atomic_folder(folder) as tmp, tqdm(total=len(seeds), unit="image", desc="class images") as bar:
        rows = []
        for start in range(0, len(seeds), BATCH):
            batch = seeds[start:start + BATCH]
            images = seeded_images(pipe, [prior.class_prompt] * len(batch), batch, steps=prior.steps,
                                   guidance=prior.guidance_scale, height=side, width=side,
                                   negative=prior.negative_prompt, guidance_rescale=rescale)
            for index, (seed, image) in enumerate(zip(batch, images), start):
                name = f"{index:04d}-seed{seed}.png"
                metadata = {"prompt": prior.class_prompt, "negative_prompt": prior.negative_prompt, "seed": seed,
                            "steps": prior.steps, "guidance": prior.guidance_scale, "sampler": DEFAULT_SAMPLER,
                            "model": model}
                if rescale:
                    metadata["guidance_rescale"] = rescale
                write_png(tmp / name, image, {key: str(value) for key, value in metadata.items()})
                rows.append(json.dumps({"file_name": name, "text": prior.class_prompt}))
            bar.update(len(batch))
        (tmp / METADATA).write_text("\n".join(rows) + "\n")
        (tmp / NOTE).write_text(json.dumps(note, indent=2) + "\n")
    print(f"[prior preservation] {len(seeds)} class images of {prior.class_prompt!r} made by {pipeline} "
          f"in {folder}", flush=True)
