"""The project's pipeline for SDXL-style models: two text encoders (the first optional), size and
crop conditioning, and SDXL's LoRA loader.

    pipe = load_pipeline("runs/shapes_xl/pipeline")      # or any StableDiffusionXLPipeline folder
    images = pipe(["a red circle"], num_inference_steps=20, guidance_scale=5.0,
                  generator=[torch.Generator().manual_seed(0)], original_size=(64, 64)).images

Everything else is `LatentDiffusionPipeline`'s (samplers, image-to-image, partial schedules, the
walks' calls, inpainting's step hook): the prompt embedding it hands around is the packed one of
`ldm.components.text_time` (hidden states and pooled projection in one tensor), which the guided
denoiser unpacks for the UNet with the time ids. What follows diffusers' StableDiffusionXLPipeline
so that the images are the same for the same seed and sampler:

- prompts are encoded as it does (each encoder's penultimate hidden state; the last one's pooled
  projection; `ldm.components.dual_text_encoder.embed_with`);
- with `force_zeros_for_empty_prompt` (its default, and what the project's SDXL exports say: their
  caption dropout trains zeros), an empty negative prompt is zeros, hidden states and pooled alike.
  diffusers zeroes only a negative prompt left out (None); `ldm generate` without `--negative`
  passes the empty one, so the two agree;
- prompts longer than a window (`prompt_chunks`) as kohya's sd-scripts and compel encode them for
  SDXL: each encoder reads each window, the windows' hidden states side by side along the sequence,
  the pooled embedding the first window's; the pooled rows stay last (`tail_rows`) when a shorter
  prompt's embedding is padded with the empty prompt's window;
- time ids default to original = target = the image size, crop (0, 0);
- a float16 autoencoder with `force_upcast` (SDXL's overflows in float16) encodes and decodes in
  float32.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
from diffusers.schedulers import SchedulerMixin
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ldm.components import autoencoder as vae_lib
from ldm.components import text_time
from ldm.components.dual_text_encoder import Encoder, embed_with, empty_window
from ldm.components.text_encoder import each_once
from ldm.sampling.pipeline import LatentDiffusionPipeline


class LatentDiffusionXLPipeline(StableDiffusionXLLoraLoaderMixin, LatentDiffusionPipeline):
    """`LatentDiffusionPipeline` with SDXL's text encoders (`text_encoder` may be None, as in
    diffusers' StableDiffusionXLPipeline, which then encodes with `text_encoder_2` alone)."""

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]

    def __init__(self, vae: vae_lib.Autoencoder, text_encoder: CLIPTextModel | None, tokenizer: CLIPTokenizer | None,
                 text_encoder_2: CLIPTextModelWithProjection, tokenizer_2: CLIPTokenizer,
                 unet: UNet2DConditionModel, scheduler: SchedulerMixin, force_zeros_for_empty_prompt: bool = True):
        DiffusionPipeline.__init__(self)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2,
                              tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self.set_processing()

    @property
    def encoders(self) -> list[Encoder]:
        first = [(self.tokenizer, self.text_encoder)] if self.text_encoder is not None else []
        return first + [(self.tokenizer_2, self.text_encoder_2)]

    @torch.no_grad()
    def embed_prompts(self, texts: list[str]) -> torch.Tensor:
        return each_once(lambda distinct: embed_with(self.encoders, distinct, self.prompt_chunks), list(texts))

    def padding_window(self) -> torch.Tensor:
        return empty_window(self.encoders)

    @property
    def prompt_tokenizer(self) -> CLIPTokenizer:
        return self.tokenizer_2

    @property
    def tail_rows(self) -> int:
        return text_time.pooled_rows(text_time.pooled_width(self.unet), self.unet.config.cross_attention_dim)

    def unconditional(self, negatives: list[str], embeddings: torch.Tensor) -> torch.Tensor:
        if not self.config.force_zeros_for_empty_prompt:
            return embeddings
        empty = torch.tensor([text == "" for text in negatives], device=embeddings.device)
        return torch.where(empty[:, None, None], torch.zeros_like(embeddings), embeddings)

    def encode_image(self, image, batch: int, generator) -> torch.Tensor:
        with vae_lib.upcast(self.vae):
            return super().encode_image(image, batch, generator).to(self.unet.dtype)

    def latents_to_images(self, latents: torch.Tensor, output_type: str = "pil"):
        with vae_lib.upcast(self.vae) as dtype:
            decoded = vae_lib.decode(self.vae, latents.to(dtype))
        return self.image_processor.postprocess(decoded, output_type=output_type)
