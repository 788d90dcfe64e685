"""Latent consistency distillation: a teacher pipeline distilled into a few-step student (whole UNet
with the guidance scale as an input, or an LCM-LoRA), trained on the teacher's latent cache."""
