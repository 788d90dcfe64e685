"""Inpainting with any pipeline ldm trains (KL or VQ, any sampler): repaint the white part of a mask.

    inpainting = Inpainting(pipe, init, mask, generators, repaint=0)
    images = pipe(prompts, image=init, strength=s, generator=generators, step_wrapper=inpainting).images
    images = [composite(image, init, mask, feather=2) for image in images]

It is `StableDiffusionInpaintPipeline`'s path for a UNet of 4 input channels, which any text-to-image
UNet is: the sampling starts as image-to-image does; after every step, outside the mask, the latents
are replaced by the init image's own latents noised to the next step's level (`scheduler.add_noise`,
with the noise the sampling started from), so that the masked part is sampled in the context of what
is kept. `repaint=N` adds RePaint's resampling (Lugmayr et al. 2022; diffusers' `RePaintScheduler`):
after each step, N times, the latents are noised back by that step and the step is taken again, which
lets the sampled part agree with the kept part. The decoded images are then laid over the init image
outside the mask (`VaeImageProcessor.apply_overlay`), the mask's edge feathered by a Gaussian blur
(`VaeImageProcessor.blur`), so that the pixels there are the init image's own, not their reconstruction.

Written here because diffusers has it only inside its pipelines' loops (the blend) or for DDPM alone
(`RePaintScheduler`); here it wraps the step of `LatentDiffusionPipeline.__call__` (its `step_wrapper`),
so one loop serves text-to-image, image-to-image and inpainting.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import ImageChops

from ldm.core.errors import LdmError
from ldm.data.decode import read_image_file

Step = Callable[[int, torch.Tensor], torch.Tensor]
BLACK_BELOW = 128  # mask values below this keep the image: diffusers' mask processor binarizes at 0.5


# ---- the mask the user gives ----------------------------------------------------------------------

def read_mask(path: str) -> PIL.Image.Image:
    """The mask file as a grayscale image (white: repaint, black: keep); a mistake is one LdmError
    line naming --mask."""
    mask = read_image_file(path, "--mask").convert("L")
    if mask.getextrema()[1] < BLACK_BELOW:
        raise LdmError(f"--mask {path} is all black: nothing to inpaint (white marks what to repaint)")
    return mask


def check_mask_size(mask: PIL.Image.Image, image_size: tuple[int, int], path: str) -> None:
    """A mask of another size than the init image's (width, height) is resized to it, as diffusers'
    inpainting pipelines do (both go to the generated size); said in a warning, since a mask drawn
    for another image may then miss what it was meant to cover."""
    if mask.size != image_size:
        warnings.warn(f"--mask {path} is {mask.width}x{mask.height} and --init-image is "
                      f"{image_size[0]}x{image_size[1]}: the mask is resized to the image", stacklevel=2)


def binary(mask: PIL.Image.Image) -> PIL.Image.Image:
    return mask.convert("L").point(lambda value: 255 if value >= BLACK_BELOW else 0)


def feathered(mask: PIL.Image.Image, feather: int) -> PIL.Image.Image:
    """The overlay mask: the white part whole, its edge blurred outwards over `feather` pixels (the
    maximum of the mask and its blur, so that every white pixel is repainted in full)."""
    mask = binary(mask)
    return ImageChops.lighter(mask, VaeImageProcessor.blur(mask, feather)) if feather else mask


def composite(generated: PIL.Image.Image, init: PIL.Image.Image, mask: PIL.Image.Image,
              feather: int) -> PIL.Image.Image:
    """The generated image inside the mask, the init image's own pixels outside it (feathered edge)."""
    overlay = feathered(mask.resize(init.size, PIL.Image.Resampling.LANCZOS), feather)
    return VaeImageProcessor().apply_overlay(overlay, init, generated.convert("RGB"))


def latent_mask(mask: PIL.Image.Image, factor: int, height: int, width: int) -> torch.Tensor:
    """(1, 1, h, w): 1 where the latents are sampled. A latent cell with any white pixel is sampled
    (max-pooled; diffusers samples it nearest-neighbour), so that everything the overlay takes from
    the generated image was sampled, not decoded from the kept latents."""
    processor = VaeImageProcessor(vae_scale_factor=factor, do_normalize=False, do_binarize=True,
                                  do_convert_grayscale=True)
    pixels = processor.preprocess(mask, height=height, width=width)
    return F.max_pool2d(pixels, kernel_size=factor)


# ---- the sampling -----------------------------------------------------------------------------------

def _clone(generator: torch.Generator) -> torch.Generator:
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


class Inpainting:
    """A `step_wrapper` for `LatentDiffusionPipeline.__call__` that keeps the init image's latents
    outside the mask (and resamples RePaint's way when `repaint` > 0).

    Made before the call, with the generators the call gets: it copies them, so that it encodes
    the init image and draws the starting noise exactly as the call's image-to-image start does
    (the same posterior sample, the same noise, as diffusers reuses its `noise`) without drawing
    from the call's own generators; a stochastic sampler's steps are then those of image-to-image.
    """

    def __init__(self, pipe, image: PIL.Image.Image, mask: PIL.Image.Image, generator, repaint: int = 0):
        self.pipe, self.image, self.repaint = pipe, image, repaint
        if isinstance(generator, list):
            self.generator = [_clone(g) for g in generator]
        else:
            self.generator = _clone(generator) if generator is not None else None
        self.mask = latent_mask(mask, pipe.vae_scale_factor, image.height, image.width)
        self.known = self.noise = None

    def __call__(self, step: Step, timesteps: torch.Tensor) -> Step:
        scheduler = self.pipe.scheduler

        def inpainting_step(i: int, latents: torch.Tensor) -> torch.Tensor:
            if self.known is None:
                self._encode(latents)
            before = copy.deepcopy(scheduler.__dict__) if self.repaint else None
            latents = self._keep(step(i, latents), timesteps, i)
            for _ in range(self.repaint):
                latents = self._noise_back(latents, timesteps, i, before)
                latents = self._keep(step(i, latents), timesteps, i)
            return latents

        return inpainting_step

    def _encode(self, latents: torch.Tensor) -> None:
        """The init image's clean latents and the noise the call started from (see the class)."""
        known = self.pipe.encode_image(self.image, latents.shape[0], self.generator).to(latents)
        self.known = known
        self.noise = randn_tensor(known.shape, generator=self.generator, device=known.device, dtype=known.dtype)
        self.mask = self.mask.to(latents)

    def _keep(self, latents: torch.Tensor, timesteps: torch.Tensor, i: int) -> torch.Tensor:
        """Outside the mask, the init image's latents at the level the sampler has reached after
        step i (clean after the last step)."""
        known = self.known
        if i + 1 < len(timesteps):
            known = self.pipe.scheduler.add_noise(known, self.noise, timesteps[i + 1:i + 2].repeat(len(known)))
        return torch.where(self.mask > 0, latents, known)

    def _noise_back(self, latents: torch.Tensor, timesteps: torch.Tensor, i: int, before: dict) -> torch.Tensor:
        """Latents after step i noised back to the level before it (RePaint's `undo_step`, which
        diffusers has for DDPM only), and the sampler's state put back as it was before step i.

        The levels come from the sampler's own `add_noise`, x_t = a_t x_0 + b_t noise, so this
        holds for the variance-preserving samplers (a = sqrt(alpha_bar)) and for the sigma ones
        (Euler, Heun: a = 1, b = sigma) alike: from level p to level t,
        x_t = (a_t / a_p) x_p + sqrt(b_t^2 - (a_t / a_p)^2 b_p^2) noise.
        Heun's steps come in halves at the same level for the second half, where this is no change.
        """
        scheduler = self.pipe.scheduler
        a_p, b_p = self._level(timesteps[i + 1]) if i + 1 < len(timesteps) else (1.0, 0.0)
        scheduler.__dict__.update(copy.deepcopy(before))  # the multistep samplers' history, step index
        a_t, b_t = self._level(timesteps[i])
        ratio = a_t / a_p
        spread = max(b_t ** 2 - (ratio * b_p) ** 2, 0.0) ** 0.5
        fresh = randn_tensor(latents.shape, generator=self.generator, device=latents.device, dtype=latents.dtype)
        return ratio * latents + spread * fresh

    def _level(self, t: torch.Tensor) -> tuple[float, float]:
        """(a_t, b_t) of the sampler's `add_noise` at timestep t, where its state now is (the
        sigma samplers' `add_noise` reads its level from their step index when a begin index is set)."""
        one, zero = torch.ones(1), torch.zeros(1)
        t = t.reshape(1).cpu()
        add_noise = self.pipe.scheduler.add_noise
        return float(add_noise(one, zero, t)), float(add_noise(zero, one, t))
