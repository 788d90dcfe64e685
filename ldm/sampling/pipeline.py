"""The project's diffusers pipeline: prompts in, images out, with a KL or a VQ autoencoder.

    pipe = load_pipeline("runs/shapes/pipeline")
    images = pipe(["a red circle"], num_inference_steps=20, guidance_scale=5.0,
                  generator=[torch.Generator().manual_seed(0)]).images

`LatentDiffusionPipeline.__call__` follows `diffusers.StableDiffusionPipeline` step for step (the
same latent initialisation, model-input scaling, guidance formula and decoding), so a KL pipeline
gives the same image as Stable Diffusion's for the same seed and scheduler. What Stable Diffusion's
class lacks and this one adds: a VQ autoencoder (decoded through `ldm.components.autoencoder`), image-to-image in the
same call (`image=`, `strength=`, as `StableDiffusionImg2ImgPipeline` does it), and prompts that
repeat in a batch encoded once each, and the text's cross-attention keys and values computed once
per call instead of once per step (`ldm.sampling.attention_cache`). LoRA adapters load through
Stable Diffusion's own loader mixin (`load_lora_weights`, `set_adapters`; see `ldm.sampling.lora`),
textual-inversion embeddings through diffusers' (`load_textual_inversion`, `ldm.sampling.embeddings`).
Prompts longer than the text encoder's 77 tokens are encoded in windows (`prompt_chunks`,
`ldm.components.prompt_tokens`), which Stable Diffusion's class does not do.

With an inpainting UNet (2C+1 input channels, the `inpainting:` stage-2 option or diffusers'
SD-inpainting), a call takes `image=` and `mask_image=` and follows `StableDiffusionInpaintPipeline`
step for step (the noise at strength 1, the masked image's latents, the mask at the latent grid), so
that the two give the same images for the same seed (`inpainting_channels`).

Export and loading live in `ldm.sampling.pipeline_io`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from ldm.components import autoencoder as vae_lib
from ldm.components import text_time
from ldm.components.text_encoder import EMPTY_PROMPT, encode_each_once, encode_prompts, pad_embeddings
from ldm.core.model_kind import is_inpainting_unet
from ldm.sampling.attention_cache import text_keys_values_cached
from ldm.sampling.guidance import GuidedDenoiser, embeds_guidance
from ldm.sampling.samplers import guidance_rescale_of

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
Generators = torch.Generator | list[torch.Generator] | None


class LatentDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin):
    """Text-to-image (and image-to-image) with a CLIP text encoder, a UNet and a KL or VQ autoencoder."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae: vae_lib.Autoencoder, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        self.set_processing()

    def set_processing(self) -> None:
        """What the call needs beside the components (a subclass registers other components first)."""
        self.vae_scale_factor = vae_lib.downsampling_factor(self.vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        # Windows of 75 tokens a prompt may take (ldm.components.prompt_tokens); `load_pipeline`
        # sets the one the model trained with, `ldm generate --prompt-chunks` another.
        self.prompt_chunks = 1
        # diffusers' inpainting pipelines' mask processor: gray, in [0, 1], binarized at 0.5
        self.mask_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False,
                                                do_binarize=True, do_convert_grayscale=True)

    @property
    def image_size(self) -> int:
        """The side of the square images the UNet was trained at: the default height and width."""
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def is_inpainting(self) -> bool:
        """Whether the UNet is the inpainting layout (it also takes a mask and the masked image's latents)."""
        return is_inpainting_unet(self.unet.config)

    # ---- conditioning ---------------------------------------------------------------------------

    def embed_prompts(self, texts: list[str]) -> torch.Tensor:
        """One embedding per text (each distinct text encoded once), as the UNet is conditioned on:
        in windows up to `prompt_chunks`, every row padded to the longest with the empty prompt's window."""
        return encode_each_once(self.tokenizer, self.text_encoder, list(texts), self.prompt_chunks)

    def padding_window(self) -> torch.Tensor:
        """(1, window tokens, width): the empty prompt's window, what a short prompt is padded with."""
        return encode_prompts(self.tokenizer, self.text_encoder, [EMPTY_PROMPT])

    @property
    def prompt_tokenizer(self) -> CLIPTokenizer:
        """The tokenizer that tells how many windows a prompt takes (an SDXL pipeline's last)."""
        return self.tokenizer

    @property
    def tail_rows(self) -> int:
        """Rows that end every embedding after its token rows: none (an SDXL pipeline's pooled rows,
        `LatentDiffusionXLPipeline`); padding goes before them."""
        return 0

    def unconditional(self, negatives: list[str], embeddings: torch.Tensor) -> torch.Tensor:
        """The negative prompts' embeddings as guidance uses them: as encoded (an SDXL pipeline
        replaces the empty prompt's with zeros, `LatentDiffusionXLPipeline`)."""
        return embeddings

    def encode_prompt(self, prompts: list[str], negative_prompts: list[str] | None,
                      num_images_per_prompt: int, guidance: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt embeddings, negative embeddings), one row per image; every distinct text is
        encoded once (Stable Diffusion's pipeline encodes each row of the batch). Prompts longer
        than a window are encoded in windows, up to `prompt_chunks`; every row, the negatives'
        too, is padded to the longest with the empty prompt's window."""
        texts = list(prompts) + (list(negative_prompts) if guidance else [])
        embeds = self.embed_prompts(texts).to(self.unet.dtype)
        if not guidance:
            return embeds.repeat_interleave(num_images_per_prompt, dim=0), None
        positive, negative = embeds.chunk(2)
        negative = self.unconditional(list(negative_prompts), negative)
        return (positive.repeat_interleave(num_images_per_prompt, dim=0),
                negative.repeat_interleave(num_images_per_prompt, dim=0))

    def conditioning(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                     num_images_per_prompt: int, guidance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt embeddings, negative embeddings or None without guidance), one row per image."""
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            positive, negative = self.encode_prompt(prompts, _as_list(negative_prompt, len(prompts)),
                                                    num_images_per_prompt, guidance)
        else:
            positive = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
            negative = negative_prompt_embeds
            if guidance and negative is None:
                negatives = _as_list(negative_prompt, prompt_embeds.shape[0])
                # padded to the prompts' windows before `unconditional`, which may make the whole row zeros
                encoded = self.same_length(prompt_embeds, self.encode_prompt(negatives, None, 1, guidance=False)[0])[1]
                negative = self.unconditional(negatives, encoded)
            if guidance:
                negative = negative.to(positive).repeat_interleave(num_images_per_prompt, dim=0)
                positive, negative = self.same_length(positive, negative)
        return positive, (negative if guidance else None)

    def same_length(self, *embeddings: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings of prompts of different window counts padded to the longest with the empty
        prompt's window (as `encode_prompt` pads them): a long prompt's negative, a walk's keyframes."""
        length = max(e.shape[1] for e in embeddings)
        if all(e.shape[1] == length for e in embeddings):
            return list(embeddings)
        empty = self.padding_window()
        return [pad_embeddings(e, length, empty, self.tail_rows) for e in embeddings]

    # ---- latents ----------------------------------------------------------------------------------

    def prepare_latents(self, shape: tuple[int, ...], generator: Generators,
                        latents: torch.Tensor | None) -> torch.Tensor:
        """Pure noise, scaled as the scheduler expects (Stable Diffusion's own initialisation)."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self._execution_device,
                                   dtype=self.unet.dtype)
        return latents.to(self._execution_device) * self.scheduler.init_noise_sigma

    def prepare_image_latents(self, image, batch: int, timestep: torch.Tensor,
                              generator: Generators) -> torch.Tensor:
        """An init image encoded and noised to `timestep` (as `StableDiffusionImg2ImgPipeline` does).

        With one generator per image, each image's posterior sample and noise come from its own
        generator, so an image does not depend on the others in its batch.
        """
        init = self.encode_image(image, batch, generator)
        noise = randn_tensor(init.shape, generator=generator, device=init.device, dtype=init.dtype)
        return self.scheduler.add_noise(init, noise, timestep.repeat(batch))

    def encode_image(self, image, batch: int, generator: Generators) -> torch.Tensor:
        """An init image's clean latents, one row per image (a KL posterior sample from each image's generator)."""
        pixels = self.image_processor.preprocess(image)
        return self.encode_pixels(pixels, batch, generator)

    def encode_pixels(self, pixels: torch.Tensor, batch: int, generator: Generators) -> torch.Tensor:
        """Images in [-1, 1] to latents, one row per image (repeated to `batch`), as `encode_image`."""
        pixels = pixels.to(self._execution_device, self.vae.dtype)
        if pixels.shape[0] != batch:
            pixels = pixels.repeat(batch // pixels.shape[0], 1, 1, 1)
        if isinstance(generator, list):
            return torch.cat([vae_lib.encode(self.vae, pixels[i:i + 1], sample=True, generator=g)
                              for i, g in enumerate(generator)])
        return vae_lib.encode(self.vae, pixels, sample=True, generator=generator)

    def inpainting_channels(self, image, mask_image, batch: int, height: int, width: int,
                            generator: Generators) -> torch.Tensor:
        """An inpainting UNet's extra input, (batch, 1 + C, h, w): the mask at the latent grid and the
        latents of the image with its masked part set to 0 (mid-gray), as `StableDiffusionInpaintPipeline`
        makes them (`prepare_mask_latents`: binarized, resized nearest; the masked image encoded with
        each image's generator, after the starting noise was drawn)."""
        pixels = self.image_processor.preprocess(image, height=height, width=width).float()
        mask = self.mask_processor.preprocess(mask_image, height=height, width=width)
        masked = self.encode_pixels(pixels * (mask < 0.5), batch, generator)
        mask = F.interpolate(mask, size=masked.shape[-2:]).to(masked)
        return torch.cat([mask.repeat(batch // mask.shape[0], 1, 1, 1), masked], dim=1)

    def img2img_timesteps(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last `strength` share of the schedule: the init image stands in for the steps skipped."""
        keep = min(int(num_inference_steps * strength), num_inference_steps)
        start = max(num_inference_steps - keep, 0) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return self.scheduler.timesteps[start:]

    def partial_timesteps(self, num_inference_steps: int, start_step: int, end_step: int | None) -> torch.Tensor:
        """The timesteps of steps [start_step, end_step) of the schedule (after `set_timesteps`)."""
        end_step = num_inference_steps if end_step is None else end_step
        if not 0 <= start_step < end_step <= num_inference_steps:
            raise ValueError(f"need 0 <= start_step < end_step <= {num_inference_steps} steps, "
                             f"got {start_step} and {end_step}")
        order = self.scheduler.order
        if start_step and hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start_step * order)
        return self.scheduler.timesteps[start_step * order: end_step * order]

    def step_kwargs(self, generator: Generators, eta: float) -> dict:
        """eta (DDIM) and generator (stochastic samplers) for the schedulers whose `step` takes them."""
        accepted = inspect.signature(self.scheduler.step).parameters
        return {name: value for name, value in (("eta", eta), ("generator", generator))
                if name in accepted}

    # ---- the call ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generators = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        image: PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor | None = None,
        strength: float = 0.8,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        start_step: int = 0,
        end_step: int | None = None,
        step_wrapper: Callable | None = None,
        guidance_rescale: float | None = None,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        mask_image: PIL.Image.Image | None = None,
    ):
        """Generate images; the arguments mean what they mean in `StableDiffusionPipeline`.

        `image` and `strength` turn it into image-to-image: the image is encoded, noised to the
        `strength` share of the schedule, and only that share is denoised. `callback_on_step_end`
        is called as `callback(pipe, step, timestep, {"latents": latents})` and may return new
        latents in its dict.

        `start_step` and `end_step` denoise only part of the schedule, as SDXL's `denoising_start`
        and `denoising_end` do, but in whole steps (so that every trajectory of a walk branches at
        the same step, `ldm.apps.animate.blend`): `latents` are taken as already denoised by
        `start_step` steps (not scaled as noise), and the output is the latents after `end_step`
        steps (`output_type="latent"`). The sampler starts fresh at `start_step` (a multistep
        sampler's first step there is first order, as after img2img's skip).

        `step_wrapper(step, timesteps)` returns what the loop calls instead of `step(i, latents)`
        (one sampler step from `timesteps[i]`): a hook that works around each step, as inpainting's
        blending and resampling do (`ldm.sampling.inpaint`).

        `guidance_rescale` (diffusers' argument; None: the one the scheduler config carries, which a
        zero-terminal-SNR export sets, see `ldm.sampling.samplers.guidance_rescale_of`).

        `original_size`, `crops_coords_top_left`, `target_size`: an SDXL-style UNet's size and crop
        conditioning, (height, width) and (top, left), as diffusers' StableDiffusionXLPipeline takes
        them (the sizes default to the image's); an SD UNet has none.

        `mask_image` (white: repaint), with `image`: what an inpainting UNet needs (and only it: any
        other UNet inpaints through `step_wrapper`); at `strength` 1 the sampling starts from pure
        noise, as `StableDiffusionInpaintPipeline`'s does.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        height, width = height or self.image_size, width or self.image_size
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, "
                             f"got {height}x{width}")
        # a UNet that takes the scale as an input (an LCM) needs no negative rows
        guidance = guidance_scale > 1.0 and not embeds_guidance(self.unet)
        if self.is_inpainting and (image is None or mask_image is None):
            raise ValueError("an inpainting UNet repaints the masked part of an image: pass image= and mask_image=")

        # 1. Conditioning.
        positive, negative = self.conditioning(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                               num_images_per_prompt, guidance)
        batch = positive.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} images")

        # 2. Timesteps and starting latents (and an inpainting UNet's mask and masked image after them,
        # as StableDiffusionInpaintPipeline draws them from the generators in that order).
        if end_step is not None and output_type != "latent":
            raise ValueError("end_step stops before the end: use output_type='latent'")
        timesteps, latents = self.starting_point(num_inference_steps, start_step, end_step, image, strength,
                                                 latents, (batch, height, width), generator)
        extra = self.step_kwargs(generator, eta)
        masked = (self.inpainting_channels(image, mask_image, batch, height, width, generator)
                  if self.is_inpainting else None)

        # 3. The UNet wrapped with guidance.
        if guidance_rescale is None:
            guidance_rescale = guidance_rescale_of(self.scheduler.config)
        times = self.time_ids(batch, height, width, original_size, crops_coords_top_left, target_size)
        denoiser = GuidedDenoiser(self.unet, positive, negative, guidance_scale, guidance_rescale, masked, times)

        # 4. Denoise.
        def step(i: int, latents: torch.Tensor) -> torch.Tensor:
            t = timesteps[i]
            noise = denoiser(self.scheduler.scale_model_input(latents, t), t)
            return self.scheduler.step(noise, t, latents, **extra, return_dict=False)[0]

        if step_wrapper is not None:
            step = step_wrapper(step, timesteps)
        steps = len(timesteps) // self.scheduler.order
        with self.progress_bar(total=steps) as bar, text_keys_values_cached(self.unet):
            for i, t in enumerate(timesteps):
                latents = step(i, latents)
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)
                if i == len(timesteps) - 1 or (i + 1) % self.scheduler.order == 0:
                    bar.update()

        # 5. Decode.
        images = latents if output_type == "latent" else self.latents_to_images(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def starting_point(self, num_inference_steps: int, start_step: int, end_step: int | None, image,
                       strength: float, latents: torch.Tensor | None, size: tuple[int, int, int],
                       generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps to run, latents to start from): noise (drawn, or `latents`), latents already
        denoised by `start_step` steps, or `image` encoded and noised to `strength` (an inpainting
        UNet's at strength 1: pure noise, as diffusers' inpainting pipeline starts)."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps
        if start_step or end_step is not None:
            timesteps = self.partial_timesteps(num_inference_steps, start_step, end_step)
            if start_step and (image is not None or latents is None):
                raise ValueError("start_step > 0 continues given latents: pass latents, not an image")
        batch, height, width = size
        if image is None and start_step:
            return timesteps, latents.to(self._execution_device)  # partly denoised: not scaled as noise
        shape = (batch, self.unet.config.out_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if image is None:
            return timesteps, self.prepare_latents(shape, generator, latents)
        timesteps = self.img2img_timesteps(num_inference_steps, strength)
        if self.is_inpainting and strength == 1.0:
            return timesteps, self.prepare_latents(shape, generator, latents)
        return timesteps, self.prepare_image_latents(image, batch, timesteps[:1], generator)

    def time_ids(self, batch: int, height: int, width: int, original_size: tuple[int, int] | None = None,
                 crop_top_left: tuple[int, int] = (0, 0), target_size: tuple[int, int] | None = None
                 ) -> torch.Tensor | None:
        """(batch, 6) time ids for an SDXL-style UNet (the sizes default to height x width), or None."""
        if not text_time.is_text_time(self.unet):
            return None
        size = (height, width)
        ids = text_time.time_ids(original_size or size, crop_top_left, target_size or size)
        return ids.to(self._execution_device, self.unet.dtype).expand(batch, -1)

    def latents_to_images(self, latents: torch.Tensor, output_type: str = "pil"):
        """Decode sampled latents (as `output_type="latent"` returns them) to images, as a call does."""
        decoded = vae_lib.decode(self.vae, latents.to(self.vae.dtype))
        return self.image_processor.postprocess(decoded, output_type=output_type)


def _as_list(negative: str | list[str] | None, n: int) -> list[str]:
    """The negative prompt for each of `n` prompts; none is the empty prompt."""
    if negative is None:
        return [""] * n
    if isinstance(negative, str):
        return [negative] * n
    if len(negative) != n:
        raise ValueError(f"got {len(negative)} negative prompts for {n} prompts")
    return list(negative)
