"""Layer 5: training. The shared Lightning trainer (resume, plots) and one subpackage per stage:
autoencoder (1), clip (1b), diffusion (2); each has its config, LightningModule, losses and export."""
