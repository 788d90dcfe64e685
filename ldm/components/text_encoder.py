"""The text side of the pipeline: a CLIP tokenizer and text encoder, and prompts as embeddings.

Every later stage conditions on CLIP text embeddings made the same way, here:

    tokenizer, text_encoder = load_text_encoder("runs/shapes")      # RUN, pipeline, or CLIP folder
    embeddings = encode_prompts(tokenizer, text_encoder, ["a red circle", ""])   # (2, 77, hidden)

`TextConditioner` is the encoder as the diffusion stage trains on it (frozen, with caption dropout).
The tokenizer itself is learned by stage 1b (`ldm.stages.clip.tokenizer`) or comes with a pretrained CLIP.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from ldm.core.errors import LdmError, first_line, type_and_first_line
from ldm.core.layout import MODEL_CONFIG, TEXT_ENCODER, TOKENIZER, looks_like_hub_id
from ldm.core.trust import check_no_code

MAX_LENGTH = 77  # CLIP's context length, and what Stable Diffusion pads every prompt to
PROMPT_IN_WARNING = 60  # characters of a truncated prompt quoted in the warning


def load_text_encoder(path_or_hub_id: str | Path, dtype: torch.dtype | None = None
                      ) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """(tokenizer, text encoder), the encoder frozen and in eval mode.

    Accepts a folder with `text_encoder/` and `tokenizer/` subfolders (a run folder or a pipeline
    folder), a plain CLIP folder (CLIPTextModel or full CLIPModel weights with the tokenizer files
    beside them), or a hub id such as `openai/clip-vit-large-patch14` (needs the network).
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        encoder_dir, tokenizer_dir = _local_folders(check_no_code(path))
        try:
            tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
            text_encoder = CLIPTextModel.from_pretrained(encoder_dir, dtype=dtype, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise LdmError(f"cannot load the CLIP text encoder from {path}: {first_line(err)}") from None
    elif looks_like_hub_id(str(path_or_hub_id)):
        tokenizer, text_encoder = _load_from_hub(str(path_or_hub_id), dtype)
    else:
        raise LdmError(f"text encoder folder not found: {path_or_hub_id}")
    positions = text_encoder.config.max_position_embeddings
    if tokenizer.model_max_length > positions:
        raise LdmError(f"{path_or_hub_id}: the tokenizer pads prompts to {tokenizer.model_max_length} "
                       f"tokens but the text encoder has only {positions} positions")
    text_encoder.requires_grad_(False)
    return tokenizer, text_encoder.eval()


def _local_folders(path: Path) -> tuple[Path, Path]:
    """Where the encoder and the tokenizer are in a local folder, or an error naming what is missing."""
    if (path / TEXT_ENCODER).is_dir() or (path / TOKENIZER).is_dir():
        for sub in (TEXT_ENCODER, TOKENIZER):
            if not (path / sub).is_dir():
                raise LdmError(f"{path} has no {sub}/ folder: a run or pipeline folder needs both "
                               f"{TEXT_ENCODER}/ and {TOKENIZER}/ (train stage 1b first)")
        return path / TEXT_ENCODER, path / TOKENIZER
    if not (path / MODEL_CONFIG).is_file():
        raise LdmError(f"no text encoder in {path}: expected {TEXT_ENCODER}/ and {TOKENIZER}/ folders "
                       "(a run or pipeline folder) or a CLIP model folder with config.json")
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        raise LdmError(f"{path} holds a model but no tokenizer (tokenizer.json or vocab.json + merges.txt)")
    return path, path


def _load_from_hub(hub_id: str, dtype) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A CLIP repository, or a diffusers pipeline repository with text_encoder/ and tokenizer/."""
    errors = []
    for encoder_sub, tokenizer_sub in (("", ""), (TEXT_ENCODER, TOKENIZER)):
        try:
            tokenizer = CLIPTokenizer.from_pretrained(hub_id, subfolder=tokenizer_sub)
            return tokenizer, CLIPTextModel.from_pretrained(hub_id, subfolder=encoder_sub, dtype=dtype,
                                                            use_safetensors=True)
        except Exception as err:  # the hub raises many types: offline, not found, gated
            errors.append(type_and_first_line(err))
    raise LdmError(f"'{hub_id}' is not a local folder, and loading it from the hub failed: {errors[0]}")


def tokenize_prompts(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, max_length), padded with the end token; long prompts truncated with a warning."""
    max_length = tokenizer.model_max_length
    # One token more than fits tells which prompts lose words, without transformers' own warning.
    lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=True, max_length=max_length + 1)
               ["input_ids"]]
    too_long = [prompt for prompt, n in zip(prompts, lengths) if n > max_length]
    if too_long:
        first = too_long[0]
        quoted = first if len(first) <= PROMPT_IN_WARNING else first[:PROMPT_IN_WARNING] + "..."
        others = f" (and {len(too_long) - 1} more)" if len(too_long) > 1 else ""
        warnings.warn(f"prompt '{quoted}'{others} is longer than the text encoder's {max_length} "
                      "tokens: the end is cut off", stacklevel=3)
    return tokenizer(list(prompts), padding="max_length", truncation=True, max_length=max_length,
                     return_tensors="pt")["input_ids"]


def embed_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """Prompts as the diffusion model's conditioning: CLIP's last hidden state (B, max_length, hidden).

    As in Stable Diffusion, every prompt is padded to the tokenizer's max length and no attention
    mask is passed (CLIP's causal mask already keeps padding from changing the prompt's tokens).
    The empty prompt "" gives the unconditional embedding used for classifier-free guidance.
    Gradients flow when enabled (a text encoder that trains); `encode_prompts` is the frozen use.
    """
    if isinstance(prompts, str):
        raise TypeError("encode_prompts takes a list of prompts, not one string")
    ids = tokenize_prompts(tokenizer, prompts).to(text_encoder.device)
    return text_encoder(input_ids=ids).last_hidden_state


@torch.no_grad()
def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel,
                   prompts: list[str]) -> torch.Tensor:
    """`embed_prompts` without gradients: the embeddings of a frozen text encoder."""
    return embed_prompts(tokenizer, text_encoder, prompts)


def encode_each_once(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str]) -> torch.Tensor:
    """`encode_prompts`, with each distinct text through the encoder once: a batch of 16 images of
    4 prompts and the empty negative prompt needs 5 encoder rows, not 32."""
    distinct = list(dict.fromkeys(prompts))
    table = encode_prompts(tokenizer, text_encoder, distinct)
    return table[[distinct.index(prompt) for prompt in prompts]]


EMPTY_PROMPT = ""


class TextConditioner:
    """The frozen CLIP text encoder of stage 1b, and caption dropout.

    Classifier-free guidance needs a model that also denoises without a prompt. Training teaches it
    by replacing a share of the captions (`dropout`, 10% by default) with the empty prompt's
    embedding, the same embedding the pipeline uses as the negative prompt at sampling time.

    The encoder is held outside the LightningModule's children (this class is not an `nn.Module`),
    so Lightning never switches it to train mode, never gives it to the optimizer, and never writes
    its weights into checkpoints; the module moves it to its device itself.
    """

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, dropout: float = 0.1):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"caption dropout must be in [0, 1), got {dropout}")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.dropout = dropout
        self._empty = None  # the empty prompt's embedding, made on first use on the right device

    @classmethod
    def load(cls, path: str, dropout: float = 0.1) -> TextConditioner:
        """From a run folder (RUN/text_encoder + RUN/tokenizer), a pipeline or a CLIP folder."""
        tokenizer, text_encoder = load_text_encoder(path)
        return cls(tokenizer, text_encoder, dropout)

    @property
    def hidden_size(self) -> int:
        """The embedding width: the UNet's cross-attention width must match it."""
        return self.text_encoder.config.hidden_size

    @property
    def embedding_shape(self) -> tuple[int, int]:
        """(rows, width) of one prompt's embedding, as the latent cache stores it."""
        return self.tokenizer.model_max_length, self.hidden_size

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def to(self, device: torch.device | str) -> TextConditioner:
        self.text_encoder.to(device)
        self._empty = None
        return self

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B, max_length, hidden_size) embeddings, as the pipeline makes them."""
        return encode_prompts(self.tokenizer, self.text_encoder, list(prompts))

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """`encode` with gradients, for a text encoder whose (LoRA) weights train."""
        return embed_prompts(self.tokenizer, self.text_encoder, list(prompts))

    def empty_embedding(self) -> torch.Tensor:
        """(1, max_length, hidden_size): the unconditional embedding used for guidance."""
        if self._empty is None:
            self._empty = self.encode([EMPTY_PROMPT])
        return self._empty

    def _dropped(self, n: int, device, generator: torch.Generator | None) -> torch.Tensor:
        """Which of n captions to drop: each with probability `dropout`."""
        return torch.rand(n, generator=generator, device=device) < self.dropout

    def drop_captions(self, embeddings: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each row replaced by the empty prompt's embedding with probability `dropout`."""
        if self.dropout == 0.0:
            return embeddings
        drop = self._dropped(embeddings.shape[0], embeddings.device, generator)
        empty = self.empty_embedding().to(embeddings)
        return torch.where(drop[:, None, None], empty, embeddings)

    def drop_caption_texts(self, captions: list[str], generator: torch.Generator | None = None) -> list[str]:
        """Each caption replaced by the empty prompt with probability `dropout`: for an encoder that
        trains, whose empty-prompt embedding changes at every step and so cannot be kept."""
        if self.dropout == 0.0:
            return list(captions)
        drop = self._dropped(len(captions), "cpu", generator).tolist()
        return [EMPTY_PROMPT if dropped else caption for caption, dropped in zip(captions, drop)]
