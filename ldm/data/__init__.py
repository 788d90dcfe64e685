"""Layer 2: image-caption data. Sources, decoding and transforms, datamodules, the exact-resume sampler,
the latent cache, and the synthetic shapes data."""
