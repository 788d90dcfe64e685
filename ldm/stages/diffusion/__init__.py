"""Stage 2: a text-conditioned latent diffusion UNet, composed of separate parts."""
