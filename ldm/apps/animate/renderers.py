"""Each walk kind as a renderer: keyframes made once, then frames at any position on the timeline.

    renderer.render([0.0, 0.25, 0.5])  ->  three uint8 frames (H, W, 3)

- `DiffusionWalk` (prompt, seed and image walks): text embeddings and guidance scales are lerped
  between keyframes, starting noise is slerped, and each batch of frames goes through the pipeline
  in one call (one UNet batch per sampler step; frames whose guidance differs, between keyframes
  of different guidance, take one call each, as the pipeline takes one scale per call). Keyframes
  come from prompts and seeds, or from the user's images by DDIM inversion. How a frame between
  keyframes is sampled is the walk's interpolation method (`METHODS`): on its own (`SlerpPath`),
  branched from its neighbours' trajectories (`ldm.apps.animate.blend`) or with interpolated
  attention (`ldm.apps.animate.attention_walk`). Frames inside a jump (`ldm.apps.animate.jumps`,
  method "dissolve" only) are dissolved: decoded from a blend of the latents at its ends.
- `AutoencoderWalk`: encoded images lerped in the stage-1 latent space and decoded, no diffusion.

`build_renderer` makes the one a walk's settings ask for: this is where the models load.

Frames depend on their position and, by float rounding only, on the other frames of their batch
(the samplers allowed are deterministic). A render's batches are fixed by frame index
(`ldm.apps.animate.passes.render_pass`), so a resumed or split render makes the same bytes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from ldm.apps.animate import spacing
from ldm.apps.animate.attention_walk import AttentionPath
from ldm.apps.animate.blend import BlendTree
from ldm.apps.animate.fixed_region import FixedRegion, read_fixed_region
from ldm.apps.animate.jumps import Jump, jump_at
from ldm.apps.animate.settings import WalkSettings
from ldm.components import autoencoder as vae_lib
from ldm.core.errors import LdmError
from ldm.core.images import to_tensor, to_uint8, unit_to_uint8
from ldm.core.layout import MODEL_CONFIG, UNET, VAE
from ldm.data.decode import read_image_file
from ldm.data.transforms import resize_and_crop
from ldm.sampling.inversion import ddim_invert, inversion_sampler
from ldm.sampling.pipeline import LatentDiffusionPipeline
from ldm.sampling.pipeline_io import image_size, load_pipeline
from ldm.sampling.samplers import make_sampler


def load_image_tensor(path: str | Path, size: int | tuple[int, int]) -> torch.Tensor:
    """An image file (decoded as training data is) as a (1, 3, H, W) tensor in [-1, 1]: resized to
    cover `size` (a side, or (width, height)), centre-cropped."""
    cropped = resize_and_crop(read_image_file(path), size, center_crop=True, rng=random.Random(0))
    return to_tensor(cropped).unsqueeze(0)


@dataclass
class DiffusionWalk:
    """Frames sampled by the pipeline between keyframe embeddings and noises, by one of the
    interpolation methods (`METHODS`)."""

    pipe: LatentDiffusionPipeline
    embeddings: torch.Tensor  # (K, tokens, width): one text embedding per keyframe
    noises: torch.Tensor  # (K, C, h, w): one starting noise per keyframe
    negative: torch.Tensor  # (1, tokens, width): the negative prompt's embedding
    loop: bool
    steps: int
    guidances: list[float]  # classifier-free guidance scale of each keyframe
    interpolation: str = "dissolve"  # a key of METHODS (WalkSettings.interpolation)
    fixed: FixedRegion | None = None  # a fixed image outside a mask (ldm.apps.animate.fixed_region)

    jumps: list[Jump] = field(default_factory=list)  # dissolved intervals (ldm.apps.animate.jumps)
    _jump_ends: dict[Jump, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _method: object = field(init=False, repr=False)

    def __post_init__(self):
        self._method = METHODS[self.interpolation]()

    @property
    def num_keyframes(self) -> int:
        return len(self.embeddings)

    @torch.no_grad()
    def render(self, times: list[float]) -> np.ndarray:
        """Frames at `times`: sampled, or dissolved where a time falls inside one of `jumps`."""
        inside = [jump_at(self.jumps, t) for t in times]
        sampled = [t for t, jump in zip(times, inside) if jump is None]
        latents = dict(zip(sampled, self.sample(sampled))) if sampled else {}
        for t, jump in zip(times, inside):
            if jump is not None:
                start, end = self.jump_ends(jump)
                latents[t] = spacing.lerp(start, end, jump.weight(t))
        images = self.pipe.latents_to_images(torch.stack([latents[t] for t in times]), output_type="np")
        frames = unit_to_uint8(images)
        return frames if self.fixed is None else self.fixed.overlay(frames)

    def sample(self, times: list[float]) -> torch.Tensor:
        """The final latents of the frames at `times`, by the walk's interpolation method."""
        return self._method.sample(self, times)

    def jump_ends(self, jump: Jump) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents at a jump's two ends, sampled once (together, so always alike)."""
        if jump not in self._jump_ends:
            start, end = self.sample([jump.start, jump.end])
            self._jump_ends[jump] = (start, end)
        return self._jump_ends[jump]

    # ---- the parts every method uses -------------------------------------------------------------

    def at(self, times: list[float]) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """(text embeddings, starting noises, guidance scales) at `times`: embeddings and scales
        lerped between keyframes, noises slerped (Gaussian noise lives near a sphere)."""
        embeddings = spacing.interpolate(self.embeddings, times, self.loop, "lerp")
        noises = spacing.interpolate(self.noises, times, self.loop, "slerp")
        scales = spacing.interpolate(torch.tensor(self.guidances, dtype=torch.float64), times, self.loop,
                                     "lerp").tolist()
        return embeddings, noises, scales

    def denoise(self, embeddings: torch.Tensor, latents: torch.Tensor, scale: float, **call) -> torch.Tensor:
        """One pipeline call on rows of embeddings and latents at one guidance scale: final latents
        (or, with `end_step`, partly denoised ones); `call` is passed on (start_step, callbacks)."""
        negative = self.negative.expand(len(embeddings), -1, -1)
        if self.fixed is not None:
            call = {**self.fixed.call_arguments(self.pipe, len(embeddings)), **call}
        return self.pipe(prompt_embeds=embeddings, negative_prompt_embeds=negative, latents=latents,
                         num_inference_steps=self.steps, guidance_scale=scale, output_type="latent",
                         **call).images

    @staticmethod
    def by_scale(scales: list[float], run) -> torch.Tensor:
        """`run(rows, scale)` once per distinct guidance scale (the pipeline takes one scale a
        call), in a fixed order; its outputs put back in row order."""
        latents: list[torch.Tensor | None] = [None] * len(scales)
        for scale in sorted(set(scales)):
            rows = [i for i, s in enumerate(scales) if s == scale]
            for i, latent in zip(rows, run(rows, scale)):
                latents[i] = latent
        return torch.stack(latents)


class SlerpPath:
    """stable-diffusion-videos' walk: each frame sampled on its own from the lerped embedding and
    the slerped noise (methods "dissolve" and "slerp"; the first also dissolves jumps)."""

    def sample(self, walk: DiffusionWalk, times: list[float]) -> torch.Tensor:
        embeddings, noises, scales = walk.at(times)
        return walk.by_scale(scales, lambda rows, scale: walk.denoise(embeddings[rows], noises[rows], scale))


# How each WalkSettings.interpolation makes the frames between keyframes.
METHODS = {"dissolve": SlerpPath, "slerp": SlerpPath, "blend": BlendTree, "attention": AttentionPath}


@dataclass
class AutoencoderWalk:
    """Frames decoded from lerped stage-1 latents (the autoencoder's latents are not Gaussian
    noise on a sphere, so the straight line is the natural path between them)."""

    vae: vae_lib.Autoencoder
    latents: torch.Tensor  # (K, C, h, w) scaled latents of the keyframe images
    loop: bool
    jumps: tuple = ()  # never any: its frames are already blends of latents, without switches

    @torch.no_grad()
    def render(self, times: list[float]) -> np.ndarray:
        latents = spacing.interpolate(self.latents, times, self.loop, "lerp")
        pixels = vae_lib.decode(self.vae, latents.to(self.vae.device, self.vae.dtype))
        return to_uint8(pixels).permute(0, 2, 3, 1).cpu().numpy()


def seed_noise(pipe: LatentDiffusionPipeline, seeds: list[int], height: int, width: int) -> torch.Tensor:
    """(K, C, h, w) starting noise, one per seed, drawn exactly as the pipeline draws it for
    `generator=torch.Generator().manual_seed(seed)`: a keyframe matches `ldm generate --seed`."""
    f = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.out_channels, height // f, width // f)  # an inpainting UNet takes more in
    return torch.cat([randn_tensor(shape, generator=torch.Generator().manual_seed(seed), dtype=pipe.unet.dtype)
                      for seed in seeds]).to(pipe.device)


def keyframe_embeddings(pipe: LatentDiffusionPipeline, texts: list[str], negative_prompt: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(one embedding per keyframe text, the negative prompt's as guidance uses it), all padded to the
    longest prompt's windows (`pipe.prompt_chunks`) so that they lerp. An SDXL pipeline's are packed
    with their pooled embeddings (ldm.components.text_time), so every walk interpolates those with
    them; time ids follow from the frame size, the same for every frame."""
    embeddings = pipe.embed_prompts(texts + [negative_prompt])
    return embeddings[:-1], pipe.unconditional([negative_prompt], embeddings[-1:])


def prompt_walk(pipe: LatentDiffusionPipeline, prompts: list[str], seeds: list[int], negative_prompt: str,
                loop: bool, steps: int, guidances: list[float], size: tuple[int, int],
                interpolation: str = "dissolve", fixed: FixedRegion | None = None) -> DiffusionWalk:
    """Keyframe k is prompts[k] with seeds[k] (a seed walk repeats one prompt); frames of `size`
    (width, height), painted only inside `fixed`'s mask when given."""
    embeddings, negative = keyframe_embeddings(pipe, prompts, negative_prompt)
    noises = seed_noise(pipe, seeds, height=size[1], width=size[0])
    return DiffusionWalk(pipe, embeddings, noises, negative, loop, steps, guidances, interpolation, fixed=fixed)


def image_walk(pipe: LatentDiffusionPipeline, images: list[str], captions: list[str], negative_prompt: str,
               loop: bool, steps: int, guidances: list[float], size: tuple[int, int],
               interpolation: str = "dissolve") -> DiffusionWalk:
    """Keyframe k is images[k] (resized to cover `size`, (width, height), and centre-cropped) inverted
    to noise by DDIM under its caption; the pipeline samples with the DDIM sampler that mirrors the
    inversion, so the walk passes through the images."""
    embeddings, negative = keyframe_embeddings(pipe, captions, negative_prompt)
    pixels = torch.cat([load_image_tensor(path, size) for path in images]).to(pipe.device, pipe.vae.dtype)
    latents = vae_lib.encode(pipe.vae, pixels)
    times = pipe.time_ids(len(images), height=size[1], width=size[0])  # an SDXL-style UNet's; else None
    noises = ddim_invert(pipe.unet, pipe.scheduler.config, latents, embeddings, steps, times)
    pipe.scheduler = inversion_sampler(pipe.scheduler.config)
    return DiffusionWalk(pipe, embeddings, noises, negative, loop, steps, guidances, interpolation)


def autoencoder_walk(vae: vae_lib.Autoencoder, images: list[str], size: tuple[int, int], loop: bool) -> AutoencoderWalk:
    pixels = torch.cat([load_image_tensor(path, size) for path in images]).to(vae.device, vae.dtype)
    with torch.no_grad():
        latents = vae_lib.encode(vae, pixels)
    return AutoencoderWalk(vae, latents, loop)


# ---- the renderer a walk asks for ----------------------------------------------------------------

def build_renderer(s: WalkSettings, device) -> DiffusionWalk | AutoencoderWalk:
    """The walk's renderer, with its keyframes made (this is where models load)."""
    if not s.uses_diffusion:
        vae, native = _load_autoencoder(s.vae or s.pipeline, device)
        return autoencoder_walk(vae, s.images, (s.width or native, s.height or native), s.loop)
    pipe = load_pipeline(s.pipeline, device=device, loras=s.loras, vae=s.vae, prompt_chunks=s.prompt_chunks,
                         embeddings=s.embeddings)
    pipe.scheduler = make_sampler(s.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)  # the bar that counts is the one over frames
    size = (s.width or pipe.image_size, s.height or pipe.image_size)
    if s.kind == "image":
        return image_walk(pipe, s.images, s.captions, s.negative_prompt, s.loop, s.steps, s.guidances, size,
                          s.interpolation)
    prompts = s.prompts if s.kind == "prompt" else s.prompts * len(s.seeds)
    fixed = read_fixed_region(s.init_image, s.mask, s.feather, size) if s.mask is not None else None
    return prompt_walk(pipe, prompts, s.seeds, s.negative_prompt, s.loop, s.steps, s.guidances, size,
                       s.interpolation, fixed)


def autoencoder_folder(path: str) -> Path:
    """The autoencoder of RUN/pipeline (its vae/) or RUN/vae itself, or an LdmError."""
    path = Path(path)
    for folder in (path / VAE, path):
        if (folder / MODEL_CONFIG).is_file():
            return folder
    raise LdmError(f"no autoencoder at {path}: expected RUN/pipeline (with vae/) or RUN/vae")


def _load_autoencoder(path: str, device) -> tuple[vae_lib.Autoencoder, int]:
    """(vae, image size): at the diffusion model's resolution when `path` is a pipeline."""
    vae = vae_lib.load_vae(autoencoder_folder(path)).to(device)
    if (Path(path) / UNET / MODEL_CONFIG).is_file():
        return vae, image_size(path)
    return vae, vae.config.sample_size
