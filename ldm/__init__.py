"""ldm: a latent diffusion toolkit built on diffusers, transformers, datasets and Lightning."""

__version__ = "0.1.0"
