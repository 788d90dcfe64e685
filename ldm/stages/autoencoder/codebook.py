"""Keeping a VQ codebook healthy: usage, perplexity, and reviving dead codes.

A VQ autoencoder trained with the plain codebook loss tends to collapse: a few codes win every
nearest-neighbour lookup, the others never receive a gradient and stay where they were initialised,
far from every encoder output. Here each training batch's code choices are counted; every
`revive_every` steps, the codes that no vector chose since the last check are moved onto encoder
outputs drawn from a buffer of recent ones, where they will be chosen (the "codebook reset" of
Jukebox and later VQ-VAE work). The counts and the buffer are buffers of this module, so they are
saved in checkpoints and a resumed run carries on where it stopped.
"""

from __future__ import annotations

import torch
from torch import nn


def usage(counts: torch.Tensor) -> float:
    """Fraction of codes chosen at least once."""
    return (counts > 0).float().mean().item()


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the code distribution: the number of equally used codes it is worth."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts.float() / total
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()).item()


class CodebookCare(nn.Module):
    def __init__(self, num_codes: int, dim: int, recent: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("recent", torch.zeros(recent, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows of `recent` in use
        self.register_buffer("cursor", torch.zeros((), dtype=torch.long))  # next row to overwrite

    @torch.no_grad()
    def observe(self, vectors: torch.Tensor, indices: torch.Tensor) -> None:
        """Count the codes chosen and remember the encoder outputs (N, dim) that chose them."""
        self.counts += torch.bincount(indices.flatten(), minlength=self.counts.numel())
        size = self.recent.shape[0]
        if vectors.shape[0] > size:
            vectors = vectors[torch.randperm(vectors.shape[0], device=vectors.device)[:size]]
        rows = (self.cursor + torch.arange(vectors.shape[0], device=vectors.device)) % size
        self.recent[rows] = vectors.float()
        self.cursor.copy_((self.cursor + vectors.shape[0]) % size)
        self.filled.copy_(torch.clamp(self.filled + vectors.shape[0], max=size))

    def dead_codes(self, counts: torch.Tensor) -> torch.Tensor:
        """Indices of the codes that `counts` (summed over processes) shows unused."""
        return torch.nonzero(counts == 0).flatten()

    @torch.no_grad()
    def replacements(self, n: int) -> torch.Tensor:
        """n recent encoder outputs, drawn at random (with repeats only if the buffer is short)."""
        pool = self.recent[: int(self.filled)]
        if len(pool) >= n:
            rows = torch.randperm(len(pool), device=pool.device)[:n]
        else:
            rows = torch.randint(0, len(pool), (n,), device=pool.device)
        return pool[rows]

    def reset_counts(self) -> None:
        self.counts.zero_()
