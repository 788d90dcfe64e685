"""The loops ldm is measured against (plain_loop: the training loop of diffusers' example script)."""
