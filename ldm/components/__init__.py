"""Layer 1: the frozen models that later stages and the pipeline use: the autoencoder (pixels <->
latents), the CLIP text encoder (prompts -> embeddings) and a CLIP for scoring images."""
