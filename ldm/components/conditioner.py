"""The conditioner: the frozen CLIP text encoder of stage 1b, and caption dropout.

Classifier-free guidance needs a model that also denoises without a prompt. Training teaches it by
replacing a share of the captions (`dropout`, 10% by default) with the empty prompt's embedding,
the same embedding the pipeline uses as the negative prompt at sampling time.

The encoder is frozen and held outside the LightningModule's children (this class is not an
`nn.Module`), so Lightning never switches it to train mode, never gives it to the optimizer, and
never writes its weights into checkpoints; the module moves it to its device itself.
"""

from __future__ import annotations

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from ldm.components.text_encoder import encode_prompts, load_text_encoder

EMPTY_PROMPT = ""


class TextConditioner:
    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, dropout: float = 0.1):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"caption dropout must be in [0, 1), got {dropout}")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.dropout = dropout
        self._empty = None  # the empty prompt's embedding, made on first use on the right device

    @classmethod
    def load(cls, path: str, dropout: float = 0.1) -> "TextConditioner":
        """From a run folder (RUN/text_encoder + RUN/tokenizer), a pipeline or a CLIP folder."""
        tokenizer, text_encoder = load_text_encoder(path)
        return cls(tokenizer, text_encoder, dropout)

    @property
    def hidden_size(self) -> int:
        """The embedding width: the UNet's cross-attention width must match it."""
        return self.text_encoder.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def to(self, device: torch.device | str) -> "TextConditioner":
        self.text_encoder.to(device)
        self._empty = None
        return self

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B, max_length, hidden_size) embeddings, as the pipeline makes them."""
        return encode_prompts(self.tokenizer, self.text_encoder, list(prompts))

    def empty_embedding(self) -> torch.Tensor:
        """(1, max_length, hidden_size): the unconditional embedding used for guidance."""
        if self._empty is None:
            self._empty = self.encode([EMPTY_PROMPT])
        return self._empty

    def drop_captions(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each row replaced by the empty prompt's embedding with probability `dropout`."""
        if self.dropout == 0.0:
            return embeddings
        drop = torch.rand(embeddings.shape[0], generator=generator, device=embeddings.device) < self.dropout
        empty = self.empty_embedding().to(embeddings)
        return torch.where(drop[:, None, None], empty, embeddings)
