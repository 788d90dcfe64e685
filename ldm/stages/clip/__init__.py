"""Stage 1b: a small CLIP and its tokenizer, trained contrastively on the user's own captions."""
