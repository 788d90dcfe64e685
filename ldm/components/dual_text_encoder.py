"""The text side of an SDXL-style model: one or two CLIP text encoders, the last with a projection.

Where the encoders come from (`text_encoder:` of the diffusion stage, or `pretrained:`):

- an SDXL-layout folder (a `StableDiffusionXLPipeline` folder or a RUN laid out alike):
  `text_encoder/` + `tokenizer/` (a CLIPTextModel, optional) and `text_encoder_2/` + `tokenizer_2/`
  (a CLIPTextModelWithProjection): SDXL's own two encoders;
- a CLIP-stage run (RUN with `text_encoder/`, `tokenizer/` and `clip/`): its text tower with its
  contrastive projection (`RUN/clip`'s `text_projection`) as the *second* encoder, and no first one.
  Why not the tower twice: its copy in the first slot would only repeat the same hidden states
  (doubling the cross-attention width and the text encoding for nothing); the one tower with its
  projection gives everything SDXL's conditioning takes, hidden states and a pooled embedding in
  CLIP's joint image-text space. diffusers' StableDiffusionXLPipeline takes `text_encoder=None`
  and then encodes with `text_encoder_2` alone (as SDXL's refiner does), so the export still loads.

`TextTimeConditioner` encodes prompts as SDXL does (each encoder's penultimate hidden state,
concatenated; the last encoder's pooled projection) into the packed embedding of
`ldm.components.text_time`, and drops captions as SDXL trained (Stability's generative-models
`ucg_rate`): a dropped caption's hidden states *and* pooled embedding are zeros, the unconditional
input that diffusers' `force_zeros_for_empty_prompt` samples with.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ldm.components.text_encoder import EMPTY_PROMPT, TextConditioner, embed_prompts, load_text_encoder
from ldm.components.text_time import pack, pooled_rows, unpack
from ldm.core.errors import LdmError, first_line
from ldm.core.layout import CLIP, TEXT_ENCODER, TEXT_ENCODER_2, TOKENIZER, TOKENIZER_2
from ldm.core.trust import check_no_code

Encoder = tuple[CLIPTokenizer, CLIPTextModel | CLIPTextModelWithProjection]
PROJECTION = "text_projection.weight"  # the CLIP's text projection, in RUN/clip's weights
TRANSFORMERS_WEIGHTS, TRANSFORMERS_INDEX = "model.safetensors", "model.safetensors.index.json"


def has_dual_layout(path: str | Path) -> bool:
    """Whether a folder holds SDXL's second text encoder (the SDXL layout)."""
    return (Path(path) / TEXT_ENCODER_2).is_dir()


def load_text_encoders(path: str | Path) -> list[Encoder]:
    """[(tokenizer, CLIPTextModel)?, (tokenizer_2, CLIPTextModelWithProjection)], frozen, eval mode."""
    path = check_no_code(Path(path).expanduser())
    if has_dual_layout(path):
        encoders = [load_text_encoder(path)] if (path / TEXT_ENCODER).is_dir() else []
        return encoders + [_load_projected(path / TEXT_ENCODER_2, path / TOKENIZER_2)]
    if (path / CLIP).is_dir() and (path / TEXT_ENCODER).is_dir():
        return [_clip_stage_tower(path)]
    raise LdmError(f"no SDXL-style text encoders in {path}: expected {TEXT_ENCODER_2}/ and {TOKENIZER_2}/ "
                   f"(an SDXL pipeline folder) or a CLIP-stage run ({TEXT_ENCODER}/, {TOKENIZER}/ and {CLIP}/)")


def _load_projected(encoder_dir: Path, tokenizer_dir: Path) -> Encoder:
    if not tokenizer_dir.is_dir():
        raise LdmError(f"{encoder_dir.parent} has {encoder_dir.name}/ but no {tokenizer_dir.name}/")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
        encoder = CLIPTextModelWithProjection.from_pretrained(encoder_dir, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise LdmError(f"cannot load the text encoder in {encoder_dir}: {first_line(err)}") from None
    return tokenizer, encoder.requires_grad_(False).eval()


def _clip_stage_tower(run: Path) -> Encoder:
    """RUN/text_encoder with RUN/clip's text projection, as one CLIPTextModelWithProjection."""
    tokenizer, tower = load_text_encoder(run)
    projection = _clip_projection(run / CLIP)
    config = tower.config
    config.projection_dim = projection.shape[0]
    encoder = CLIPTextModelWithProjection(config)
    # The tower's weights, named without the "text_model." that older transformers put before them.
    weights = {name.removeprefix("text_model."): tensor for name, tensor in tower.state_dict().items()}
    try:
        encoder.text_model.load_state_dict(weights)
        encoder.text_projection.weight.data.copy_(projection)
    except RuntimeError as err:
        raise LdmError(f"{run / TEXT_ENCODER} and {run / CLIP} do not make one CLIP text tower with its "
                       f"projection: {first_line(err)}") from None
    return tokenizer, encoder.requires_grad_(False).eval()


def _clip_projection(clip_dir: Path) -> torch.Tensor:
    """RUN/clip's text projection, read from its safetensors files (transformers' names)."""
    index = clip_dir / TRANSFORMERS_INDEX
    files = sorted({clip_dir / name for name in json.loads(index.read_text())["weight_map"].values()}) \
        if index.is_file() else [clip_dir / TRANSFORMERS_WEIGHTS]
    for file in files:
        if not file.is_file():
            continue
        with safe_open(str(file), framework="pt") as f:
            if PROJECTION in f.keys():
                return f.get_tensor(PROJECTION)
    raise LdmError(f"{clip_dir} has no {PROJECTION} (is it the CLIP stage's RUN/clip?)")


def embed_with(encoders: list[Encoder], prompts: list[str], max_chunks: int = 1) -> torch.Tensor:
    """The packed embedding (B, T + k, W) of prompts, as StableDiffusionXLPipeline encodes them:
    each encoder's penultimate hidden state concatenated, and the last encoder's pooled projection.

    Prompts longer than one window (`max_chunks` above 1) are encoded as kohya's sd-scripts and
    compel encode them for SDXL: each encoder reads each window of 75 tokens on its own, the
    windows' hidden states are concatenated along the sequence (T = windows x 77, short prompts
    padded with the empty prompt's window, `embed_prompts`), and the pooled embedding is the first
    window's. The pooled rows still end the packed embedding, after all the token rows."""
    if not isinstance(encoders[-1][1], CLIPTextModelWithProjection):
        raise LdmError("the last SDXL text encoder has no projection (it must be a CLIPTextModelWithProjection)")
    hidden = []
    for tokenizer, encoder in encoders:
        states, pooled = embed_prompts(tokenizer, encoder, list(prompts), max_chunks, pooled=True, penultimate=True)
        hidden.append(states)
    if len({states.shape[1] for states in hidden}) > 1:
        raise LdmError("the SDXL text encoders' tokenizers split a prompt into different numbers of windows")
    return pack(torch.cat(hidden, dim=-1), pooled)


@torch.no_grad()
def empty_window(encoders: list[Encoder]) -> torch.Tensor:
    """(1, window tokens, width): the empty prompt's token rows as `embed_with` encodes them (its
    pooled rows left out), what a shorter prompt's embedding is padded with."""
    return unpack(embed_with(encoders, [EMPTY_PROMPT]), encoders[-1][1].config.projection_dim)[0]


class TextTimeConditioner(TextConditioner):
    """The frozen text encoders of an SDXL-style model, with SDXL's caption dropout (to zeros).

    `tokenizer` and `text_encoder` are the last (projected) pair, `first` the optional first one.
    """

    def __init__(self, encoders: list[Encoder], dropout: float = 0.1, max_chunks: int = 1):
        super().__init__(*encoders[-1], dropout, max_chunks)
        self.first = encoders[0] if len(encoders) == 2 else None
        if self.first is not None:
            self.first[1].requires_grad_(False).eval()
        self._window = None  # the empty prompt's token rows, made on first use on the right device

    @classmethod
    def load(cls, path: str, dropout: float = 0.1, max_chunks: int = 1) -> TextTimeConditioner:
        return cls(load_text_encoders(path), dropout, max_chunks)

    @property
    def encoders(self) -> list[Encoder]:
        return ([self.first] if self.first is not None else []) + [(self.tokenizer, self.text_encoder)]

    @property
    def hidden_size(self) -> int:
        """The UNet's cross-attention width: the encoders' widths together."""
        return sum(encoder.config.hidden_size for _, encoder in self.encoders)

    @property
    def pooled_size(self) -> int:
        return self.text_encoder.config.projection_dim

    @property
    def tail_rows(self) -> int:
        """The pooled embedding's rows, after the token rows of every packed embedding."""
        return pooled_rows(self.pooled_size, self.hidden_size)

    def to(self, device: torch.device | str) -> TextTimeConditioner:
        if self.first is not None:
            self.first[1].to(device)
        self._window = None
        return super().to(device)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self.embed(prompts)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        return embed_with(self.encoders, list(prompts), self.max_chunks)

    def empty_embedding(self) -> torch.Tensor:
        """SDXL's unconditional input: zeros (what a dropped caption trains)."""
        if self._empty is None:
            self._empty = torch.zeros_like(self.encode([EMPTY_PROMPT]))
        return self._empty

    def padding_window(self) -> torch.Tensor:
        """The empty prompt's window as encoded (token rows, not zeros): a short caption's padding,
        as `embed_with` pads a batch."""
        if self._window is None:
            self._window = empty_window(self.encoders)
        return self._window

    def dropped_embedding(self, rows: int) -> torch.Tensor:
        """Zeros, token rows and pooled alike, however long the batch's captions."""
        return torch.zeros(1, rows, self.hidden_size, device=self.device)


def text_components(conditioner: TextConditioner) -> dict:
    """A conditioner's encoders and tokenizers under a diffusers pipeline's names: SD's one, or
    SDXL's two (the first None where there is only the projected one)."""
    if not isinstance(conditioner, TextTimeConditioner):
        return {"text_encoder": conditioner.text_encoder, "tokenizer": conditioner.tokenizer}
    tokenizer, text_encoder = conditioner.first or (None, None)
    return {"text_encoder": text_encoder, "tokenizer": tokenizer,
            "text_encoder_2": conditioner.text_encoder, "tokenizer_2": conditioner.tokenizer}
