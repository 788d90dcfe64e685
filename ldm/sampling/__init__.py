"""Layer 4: turning noise into images: the pipeline, guidance, samplers, DDIM inversion, and
pipeline folders on disk."""
