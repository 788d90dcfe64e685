"""The text side of the pipeline: a CLIP tokenizer and text encoder, and prompts as embeddings.

Every later stage conditions on CLIP text embeddings made the same way, here:

    tokenizer, text_encoder = load_text_encoder("runs/shapes")      # RUN, pipeline, or CLIP folder
    embeddings = encode_prompts(tokenizer, text_encoder, ["a red circle", ""])   # (2, 77, hidden)
    long = encode_prompts(tokenizer, text_encoder, [prompt_of_100_tokens, ""], max_chunks=2)  # (2, 154, hidden)

`TextConditioner` is the encoder as the diffusion stage trains on it (frozen, with caption dropout).
The tokenizer itself is learned by stage 1b (`ldm.stages.clip.tokenizer`) or comes with a pretrained CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from ldm.components.prompt_tokens import tokenize_chunks
from ldm.core.errors import LdmError, first_line, type_and_first_line
from ldm.core.layout import MODEL_CONFIG, TEXT_ENCODER, TOKENIZER, looks_like_hub_id
from ldm.core.trust import check_no_code

MAX_LENGTH = 77  # CLIP's context length, and what Stable Diffusion pads every prompt to
EMPTY_PROMPT = ""


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


def embed_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str],
                  max_chunks: int = 1, pooled: bool = False, penultimate: bool = False):
    """Prompts as the diffusion model's conditioning: CLIP's last hidden state (B, tokens, hidden)
    (`penultimate`: the one before it, as SDXL conditions on).

    As in Stable Diffusion, every prompt is padded to the tokenizer's max length and no attention
    mask is passed (CLIP's causal mask already keeps padding from changing the prompt's tokens).
    The empty prompt "" gives the unconditional embedding used for classifier-free guidance.

    With `max_chunks` above 1, a prompt longer than one window (75 tokens) is encoded in windows
    (`ldm.components.prompt_tokens`), each through the encoder on its own, and their embeddings are
    concatenated: (B, chunks x 77, hidden). Prompts of fewer windows than the longest are padded
    with the empty prompt's window embedding (compel's padding), so rows stack and guidance's
    negative matches its positive. A batch of one-window prompts gives what it always gave.

    `pooled`: also return CLIP's pooled output (B, hidden) of each prompt's first window (a
    CLIPTextModelWithProjection's projected one, `text_embeds`), what diffusers' pipelines take as
    the pooled embedding (SDXL's `pooled_prompt_embeds`) and what compel returns for long prompts.
    Gradients flow when enabled (a text encoder that trains); `encode_prompts` is the frozen use.
    """
    if isinstance(prompts, str):
        raise TypeError("encode_prompts takes a list of prompts, not one string")
    windows = tokenize_chunks(tokenizer, list(prompts), max_chunks)
    counts = [len(rows) for rows in windows]
    longest = max(counts)
    padded = any(count < longest for count in counts)
    rows = torch.cat(windows + ([tokenize_chunks(tokenizer, [EMPTY_PROMPT])[0]] if padded else []))
    out = text_encoder(input_ids=rows.to(text_encoder.device), output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
    if longest > 1:
        hidden = _concatenate_windows(hidden, counts, longest)
    if not pooled:
        return hidden
    first = torch.tensor([0, *counts[:-1]]).cumsum(0).to(hidden.device)
    return hidden, (out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output)[first]


def _concatenate_windows(hidden: torch.Tensor, counts: list[int], longest: int) -> torch.Tensor:
    """(windows, tokens, hidden) encoder rows, the empty prompt's last when any prompt is short of
    `longest` windows, as (prompts, longest x tokens, hidden): each prompt's windows in order, then
    the empty window repeated."""
    empty = hidden[-1:]
    out, start = [], 0
    for count in counts:
        own = hidden[start:start + count]
        out.append(torch.cat([own, empty.expand(longest - count, -1, -1)]).flatten(0, 1))
        start += count
    return torch.stack(out)


def pad_embeddings(embeddings: torch.Tensor, length: int, empty: torch.Tensor, tail: int = 0) -> torch.Tensor:
    """(B, rows, hidden) embeddings padded to `length` rows with `empty`, the empty prompt's
    (1, window tokens, hidden) embedding, window by window: how a short prompt's embedding meets a
    long one's (guidance's negative, a walk between prompts of different lengths). `tail`: rows that
    end every embedding after its token rows (an SDXL-style model's pooled rows,
    `ldm.components.text_time`), kept last: the windows go before them."""
    missing = length - embeddings.shape[1]
    if missing == 0:
        return embeddings
    windows = missing // empty.shape[1]
    if missing < 0 or windows * empty.shape[1] != missing:
        raise ValueError(f"cannot pad embeddings of {embeddings.shape[1]} rows to {length} in windows "
                         f"of {empty.shape[1]}")
    filler = empty.to(embeddings).repeat(1, windows, 1).expand(embeddings.shape[0], -1, -1)
    end = embeddings.shape[1] - tail
    return torch.cat([embeddings[:, :end], filler, embeddings[:, end:]], dim=1)


@torch.no_grad()
def encode_prompts(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str],
                   max_chunks: int = 1) -> torch.Tensor:
    """`embed_prompts` without gradients: the embeddings of a frozen text encoder."""
    return embed_prompts(tokenizer, text_encoder, prompts, max_chunks)


def encode_each_once(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: list[str],
                     max_chunks: int = 1) -> torch.Tensor:
    """`encode_prompts`, with each distinct text through the encoder once: a batch of 16 images of
    4 prompts and the empty negative prompt needs 5 encoder rows, not 32. Every row is padded to the
    longest prompt's windows."""
    return each_once(lambda texts: encode_prompts(tokenizer, text_encoder, texts, max_chunks), prompts)


def each_once(encode: Callable[[list[str]], torch.Tensor], prompts: list[str]) -> torch.Tensor:
    """`encode(prompts)`, calling it on each distinct text once and repeating its rows."""
    distinct = list(dict.fromkeys(prompts))
    table = encode(distinct)
    return table[[distinct.index(prompt) for prompt in prompts]]


class TextConditioner:
    """The frozen CLIP text encoder of stage 1b, and caption dropout.

    Classifier-free guidance needs a model that also denoises without a prompt. Training teaches it
    by replacing a share of the captions (`dropout`, 10% by default) with the empty prompt's
    embedding, the same embedding the pipeline uses as the negative prompt at sampling time.

    The encoder is held outside the LightningModule's children (this class is not an `nn.Module`),
    so Lightning never switches it to train mode, never gives it to the optimizer, and never writes
    its weights into checkpoints; the module moves it to its device itself.
    """

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, dropout: float = 0.1,
                 max_chunks: int = 1):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"caption dropout must be in [0, 1), got {dropout}")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.dropout = dropout
        self.max_chunks = max_chunks  # windows of 75 tokens a caption may take (prompt_chunks)
        self._empty = None  # the empty prompt's embedding, made on first use on the right device

    @classmethod
    def load(cls, path: str, dropout: float = 0.1, max_chunks: int = 1) -> TextConditioner:
        """From a run folder (RUN/text_encoder + RUN/tokenizer), a pipeline or a CLIP folder."""
        tokenizer, text_encoder = load_text_encoder(path)
        return cls(tokenizer, text_encoder, dropout, max_chunks)

    @property
    def hidden_size(self) -> int:
        """The embedding width: the UNet's cross-attention width must match it."""
        return self.text_encoder.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def to(self, device: torch.device | str) -> TextConditioner:
        self.text_encoder.to(device)
        self._empty = None
        return self

    @property
    def window_tokens(self) -> int:
        """The embedding rows of one window (77 for SD's CLIP); a long caption's are a multiple."""
        return self.tokenizer.model_max_length

    @property
    def tail_rows(self) -> int:
        """Rows that end every embedding after its token rows: none here (an SDXL-style model's
        pooled rows, `ldm.components.dual_text_encoder`)."""
        return 0

    @property
    def max_tokens(self) -> int:
        """The embedding rows of the longest caption allowed: `max_chunks` windows (and the tail's)."""
        return self.max_chunks * self.window_tokens + self.tail_rows

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(B, max_length x windows, hidden_size) embeddings, as the pipeline makes them."""
        return encode_prompts(self.tokenizer, self.text_encoder, list(prompts), self.max_chunks)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """`encode` with gradients, for a text encoder whose (LoRA) weights train."""
        return embed_prompts(self.tokenizer, self.text_encoder, list(prompts), self.max_chunks)

    def padded(self, embeddings: torch.Tensor, length: int) -> torch.Tensor:
        """Embeddings padded to `length` rows with the empty prompt's window (`pad_embeddings`)."""
        return pad_embeddings(embeddings, length, self.padding_window(), self.tail_rows)

    def padding_window(self) -> torch.Tensor:
        """(1, window tokens, hidden_size): what a short caption is padded with, the empty prompt's window."""
        return self.empty_embedding()

    def empty_embedding(self) -> torch.Tensor:
        """(1, max_length, hidden_size): the unconditional embedding used for guidance (one window)."""
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
        empty = self.dropped_embedding(embeddings.shape[1]).to(embeddings)
        return torch.where(drop[:, None, None], empty, embeddings)

    def dropped_embedding(self, rows: int) -> torch.Tensor:
        """(1, rows, hidden_size): what a dropped caption becomes in a batch of `rows`-row embeddings;
        in a long batch, the empty window repeated, as a short prompt is padded."""
        return self.padded(self.empty_embedding(), rows)

    def drop_caption_texts(self, captions: list[str], generator: torch.Generator | None = None) -> list[str]:
        """Each caption replaced by the empty prompt with probability `dropout`: for an encoder that
        trains, whose empty-prompt embedding changes at every step and so cannot be kept."""
        if self.dropout == 0.0:
            return list(captions)
        drop = self._dropped(len(captions), "cpu", generator).tolist()
        return [EMPTY_PROMPT if dropped else caption for caption, dropped in zip(captions, drop)]
