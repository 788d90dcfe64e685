"""Caption rules: what counts as a caption, and which one a sample trains on.

A caption column holds a string, or a list of strings (several captions of one image). People's
data also holds None, empty strings, numbers and lists of anything; one rule reads them all:

- a string is a caption once stripped of surrounding blanks, unless nothing is left;
- a list's elements are turned to strings (a list of numbers is a list of captions), dropping the
  missing (None) and empty ones;
- anything else (None, a number, a mapping) is no caption.

With `data.caption_tags`, a training caption is read as tags, split at the separator: the tags
after the first `keep` are shuffled and some dropped (`vary_tags`), drawn from the sample's own
generator, which the sampler seeds from (data.seed, epoch): so the order changes from epoch to epoch
and a resumed run draws the same as an uninterrupted one.

An image with no caption is skipped and counted, or trained with the empty prompt when
`data.empty_captions: keep` says so; the scan of the data (ldm/data/sources/scan.py) decides which, so
what reaches training always has at least one caption or is kept on purpose.
"""

from __future__ import annotations

import random

NO_CAPTION = "no caption"  # the reason counted for an image skipped for its caption


def clean_captions(value) -> list[str]:
    """Every usable caption in a caption column's value (none: an empty list)."""
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, (list, tuple)):
        texts = [str(item) for item in value if item is not None]
    else:
        return []
    return [text.strip() for text in texts if text.strip()]


def captions_of(value) -> list[str]:
    """All captions of an image that trains: its captions, or the empty prompt when it has none."""
    return clean_captions(value) or [""]


def pick_caption(value, rng: random.Random, train: bool) -> str:
    """One caption of an image: drawn at random in training, the first otherwise."""
    texts = captions_of(value)
    return rng.choice(texts) if train and len(texts) > 1 else texts[0]


def vary_tags(caption: str, rng: random.Random, keep: int, separator: str, shuffle: bool = True,
              dropout: float = 0.0) -> str:
    """The caption's tags, the first `keep` in place, the rest shuffled (`shuffle`) and each left
    out with probability `dropout`; joined by the separator and a space, as sd-scripts does."""
    tags = [tag.strip() for tag in caption.split(separator) if tag.strip()]
    fixed, rest = tags[:keep], tags[keep:]
    if shuffle:
        rng.shuffle(rest)
    if dropout:
        rest = [tag for tag in rest if rng.random() >= dropout]
    return f"{separator} ".join(fixed + rest)
