"""CLIP's contrastive loss, with hard text negatives made by swapping one word of a caption.

In a batch of 64 shapes captions, a caption can be told from the other 63 by its colour, size and
background alone, so CLIP's plain in-batch loss never has to look at the shape: trained on it, the
small CLIP learned colour perfectly and shape not at all. A hard negative is the image's own
caption with one word swapped for another of the same kind ("a red circle ..." ->
"a red square ..."), which the image can only reject by seeing what the swapped word names.

The interchangeable words come from the config (`hard_negatives.words`, groups such as
[circle, square, triangle]); nothing here knows about shapes. Each caption gets one negative per
group it mentions, with one of its words of that group replaced by another word of the group.
"""

from __future__ import annotations

import random
import re

import torch
import torch.nn.functional as F

from ldm.core.errors import LdmError


class WordSwapper:
    """Makes hard-negative captions by swapping a word (or phrase) for another of its group."""

    def __init__(self, groups: list[list[str]], seed: int = 0):
        for i, group in enumerate(groups):
            words = [w.lower() for w in group]
            if len(set(words)) < 2:
                raise LdmError(f"hard_negatives.words[{i}] needs at least two different words to swap "
                               f"between, got {group}")
        self.groups = [[w.lower() for w in group] for group in groups]
        # Longest first, so that "top left" is matched before a shorter word inside it; \b keeps
        # "red" from matching inside "covered". Captions are matched case-insensitively.
        self.patterns = [re.compile(r"\b(" + "|".join(re.escape(w) for w in sorted(group, key=len, reverse=True))
                                    + r")\b", re.IGNORECASE) for group in self.groups]
        self.rng = random.Random(seed)

    def negatives(self, captions: list[str], rng: random.Random | None = None) -> list[str]:
        """For each caption and each group it mentions: the caption with one such word swapped, the
        words picked by `rng` (default: the swapper's own generator)."""
        rng = rng or self.rng
        swapped = []
        for caption in captions:
            for pattern, group in zip(self.patterns, self.groups):
                matches = list(pattern.finditer(caption))
                if not matches:
                    continue
                match = rng.choice(matches)
                other = rng.choice([w for w in group if w != match.group(0).lower()])
                swapped.append(caption[:match.start()] + other + caption[match.end():])
        return swapped


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss, where image i's caption is text i and extra columns are negatives.

    `logits_per_image` is (B, B + N): the B images against their B captions, then N hard-negative
    captions. transformers' CLIPModel computes only the square (B, B) case (`return_loss=True`),
    which is why the loss is written here. Image-to-text ranks each image's caption among all
    B + N texts; text-to-image ranks each caption's image among the B images, as in CLIP (a
    negative caption has no image to find). With N = 0 this is exactly CLIPModel's loss.
    """
    batch = logits_per_image.shape[0]
    target = torch.arange(batch, device=logits_per_image.device)
    image_to_text = F.cross_entropy(logits_per_image, target)
    text_to_image = F.cross_entropy(logits_per_image[:, :batch].T, target)
    return (image_to_text + text_to_image) / 2
