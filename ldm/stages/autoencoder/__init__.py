"""Stage 1: a KL or VQ autoencoder (diffusers' AutoencoderKL / VQModel), trained the taming way."""
