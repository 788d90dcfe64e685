"""The run's tokenizer: a CLIP-style BPE learned from the training captions before the CLIP trains."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import ByteLevel
from tokenizers.trainers import BpeTrainer
from transformers import CLIPTokenizer

from ldm.components.text_encoder import MAX_LENGTH
from ldm.core import layout
from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError
from ldm.data.captions import clean_captions
from ldm.data.config import DataConfig
from ldm.data.sources import load_source
from ldm.stages.clip.config import Config

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"  # also CLIP's padding and unknown token
END_OF_WORD = "</w>"
TOKENIZER_CAPTIONS = 100_000  # captions read to learn the tokenizer (streamed data has no end)
def caption_iterator(data: DataConfig):
    """Every training caption (each of a list of captions), for learning the tokenizer."""
    ds = load_source(data)
    column = ds.select_columns([data.caption_column])
    for i, row in enumerate(column):
        if i >= TOKENIZER_CAPTIONS:
            return
        yield from clean_captions(row[data.caption_column])


def prepare_tokenizer(cfg: Config, strategy=None) -> CLIPTokenizer:
    """The run's tokenizer, the same in every process: the one saved when this run began (on resume),
    or one learned from the captions by the main process and sent to the others (`strategy`, Lightning's,
    under several processes). Learned in every process, it could differ: BPE training breaks ties
    between equally frequent pairs in an order that can change from process to process."""
    saved = cfg.stage_dir / layout.TOKENIZER
    if cfg.train.ckpt_path is not None and saved.is_dir():
        return CLIPTokenizer.from_pretrained(saved)
    main = strategy is None or strategy.is_global_zero
    learned = learn_bpe(caption_iterator(cfg.data), cfg.tokenizer.vocab_size) if main else None
    if strategy is not None:
        learned = strategy.broadcast(learned, src=0)
    vocab, merges = learned
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=cfg.tokenizer.max_length)
    if main:
        save_tokenizer(tokenizer, saved)
    return tokenizer


def save_tokenizer(tokenizer: CLIPTokenizer, folder: Path) -> None:
    with atomic_folder(folder) as tmp:
        tokenizer.save_pretrained(tmp)


def train_tokenizer(captions: Iterable[str], vocab_size: int,
                    model_max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A CLIP-style byte-level BPE learned from `captions`, as a transformers `CLIPTokenizer`."""
    vocab, merges = learn_bpe(captions, vocab_size)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def learn_bpe(captions: Iterable[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocabulary, merges) of a CLIP-style byte-level BPE learned from `captions`.

    The vocabulary is laid out as OpenAI's CLIP lays out its own: the 256 byte symbols, the same
    with the end-of-word suffix `</w>`, the merged tokens in the order they were learned, then
    `<|startoftext|>` and `<|endoftext|>`. Because every byte is in the vocabulary (at a word's end
    or not), any text encodes, even words never seen in the captions. `vocab_size` is an upper
    bound: a small caption set may run out of pairs worth merging first.
    """
    # Lowercasing, whitespace folding and CLIP's word-splitting regex: taken from transformers'
    # own CLIPTokenizer, so that training splits words exactly as the saved tokenizer will.
    template = CLIPTokenizer().backend_tokenizer
    alphabet = ByteLevel.alphabet()
    base = sorted(alphabet) + [symbol + END_OF_WORD for symbol in sorted(alphabet)]
    if vocab_size < len(base) + 2:
        raise LdmError(f"tokenizer vocab_size={vocab_size} is too small: a byte-level BPE needs at "
                       f"least {len(base) + 2} tokens (the bytes, with and without {END_OF_WORD}, "
                       "and the two special tokens)")
    bpe = Tokenizer(BPE(unk_token=EOS, end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = template.normalizer
    bpe.pre_tokenizer = template.pre_tokenizer
    trainer = BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, special_tokens=[],
                         end_of_word_suffix=END_OF_WORD, show_progress=False)
    bpe.train_from_iterator(captions, trainer)

    vocab = {token: index for index, token in enumerate(base)}
    merges = []
    for left, right in _learned_merges(bpe):
        if len(vocab) >= vocab_size - 2:
            break
        merges.append((left, right))
        vocab.setdefault(left + right, len(vocab))
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    return vocab, merges


def _learned_merges(bpe: Tokenizer) -> list[tuple[str, str]]:
    """The trained BPE's merges, in the order learned (the model's JSON lists them so)."""
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
