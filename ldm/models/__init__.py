"""The trainable stages: one module per stage (autoencoder, clip, diffusion), plus their losses."""
