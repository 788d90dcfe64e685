"""Real data that installs offline: Debian's openclipart-png as an imagefolder with captions.

    apt-get install openclipart-png          # 8,121 PNGs under /usr/share/openclipart/png
    ldm data clipart data/clipart [--source /usr/share/openclipart/png]
    ldm data check data/clipart --resolution 64 --buckets

`make_clipart_dataset` writes OUT/train/ and OUT/test/ (a held-out share drawn by the seed), each
with the PNGs as they are (in their category folders: transparency, palettes, grayscale, odd sizes
and a few decompression bombs included: the data layer decodes them) and a metadata.jsonl of
{"file_name", "text", "category"}. OUT is written whole or not at all: into a hidden folder beside
it, renamed into place when complete.

A caption is the drawing's title from its file name, then its category folders from the most
specific: `animals/mammals/big_cats/tiger_nicu_buculei_01.png` -> "tiger, big cats, mammals,
animals". openclipart names its files `title_author_NN` (cut at about 24 characters), and the
authors' names are dropped: an author is a run of one to three words that ends signed names after
at least AUTHOR_MIN_TITLES different titles and seldom starts a name itself (titles do); a name
cut short is matched by its beginning. Authors who signed fewer files keep their names in the
caption, and a few title words that end many signed names ("icon", "sign") are taken for authors.
Words with digits inside ("32pt05step", "70a001") are dropped, trailing digits are cut ("bee1").
"""

from __future__ import annotations

import collections
import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError, first_line

DEFAULT_SOURCE = Path("/usr/share/openclipart/png")
SIGNED = re.compile(r"(_\d+[a-z]?)+$|_$")  # "_01", "_07b", "_01_02" or a trailing "_": title_author_NN
WORD_SEPARATORS = re.compile(r"[_\-\s.]+")
TRAILING_DIGITS = re.compile(r"\d+$")
AUTHOR_MIN_TITLES = 3  # an author's name ends signed names after at least this many different titles
AUTHOR_WORDS = (1, 2, 3)  # how many words a name may have
START_RATIO = 5  # an author's first word ends names at least this many times more often than it starts one
MIN_PREFIX = 4  # characters of a cut-short author's name needed to recognise it


@dataclass
class ClipartDataset:
    out: Path
    train: int  # images in OUT/train
    test: int  # images in OUT/test
    authors: int  # author names recognised and dropped from the captions


def words(text: str) -> list[str]:
    return [word for word in WORD_SEPARATORS.split(text.lower()) if word]


def name_words(path: Path) -> tuple[list[str], bool]:
    """The words of a file's name, and whether it is signed (title_author_NN)."""
    signed = bool(SIGNED.search(path.stem))
    return words(SIGNED.sub("", path.stem)), signed


def learn_authors(files: list[Path]) -> set[str]:
    """Authors' names (words joined by "_") recognised as described in the module docstring."""
    titles_before = collections.defaultdict(set)  # candidate -> first words of the names it ends
    starts = collections.Counter()  # word -> names it starts
    for path in files:
        tokens, signed = name_words(path)
        if tokens:
            starts[tokens[0]] += 1
        if signed:
            for n in AUTHOR_WORDS:
                if len(tokens) > n:
                    titles_before["_".join(tokens[-n:])].add(tokens[0])
    folder_words = {word for path in files for part in path.parent.parts for word in words(part)}
    authors = set()
    for candidate, titles in titles_before.items():
        first = candidate.split("_")[0]
        if (len(titles) >= AUTHOR_MIN_TITLES and first not in folder_words and len(candidate) >= 3
                and START_RATIO * starts[first] < len(titles)):
            authors.add(candidate)
    return authors


def title(path: Path, authors: set[str]) -> str:
    """The drawing's title: its name's words, the author's dropped, digits cleaned."""
    tokens, signed = name_words(path)
    if signed:
        for start in range(1, len(tokens)):
            tail = "_".join(tokens[start:])
            if tail in authors or (len(tail) >= MIN_PREFIX and any(a.startswith(tail) for a in authors)):
                tokens = tokens[:start]
                break
    cleaned = [TRAILING_DIGITS.sub("", token) for token in tokens]
    return " ".join(token for token in cleaned if token and not any(c.isdigit() for c in token)
                    and (len(token) > 1 or token == "a"))


def caption(relative: Path, authors: set[str]) -> str:
    """ "title, most specific category, ..., top category" (repeated words once)."""
    parts = [title(relative, authors)] + [" ".join(words(part)) for part in reversed(relative.parent.parts)]
    kept: list[str] = []
    for part in parts:
        if part and part not in kept:
            kept.append(part)
    return ", ".join(kept)


def write_split(rows: list[tuple[Path, str]], source: Path, out: Path) -> None:
    """The PNGs of `rows` (relative path, caption) copied from `source` into `out`, with metadata.jsonl."""
    lines = []
    out.mkdir(parents=True, exist_ok=True)
    for relative, text in rows:
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, target)
        lines.append(json.dumps({"file_name": relative.as_posix(), "text": text, "category": relative.parts[0]}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def make_clipart_dataset(out: str | Path, source: str | Path = DEFAULT_SOURCE, test_fraction: float = 0.1,
                         seed: int = 0) -> ClipartDataset:
    """Write OUT/train and OUT/test (a `test_fraction` share, drawn by `seed`) from the PNGs under `source`."""
    out, source = Path(out), Path(source)
    if not source.is_dir():
        raise LdmError(f"{source} not found: apt-get install openclipart-png, or pass --source")
    if out.exists():
        raise LdmError(f"{out} exists: choose a new folder")
    files = sorted(path.relative_to(source) for path in source.rglob("*.png") if path.is_file())
    if not files:
        raise LdmError(f"no PNG files under {source}")
    authors = learn_authors(files)
    rows = [(relative, caption(relative, authors)) for relative in files]
    random.Random(seed).shuffle(rows)
    n_test = round(len(rows) * test_fraction)
    try:
        with atomic_folder(out) as tmp:
            write_split(sorted(rows[n_test:]), source, tmp / "train")
            write_split(sorted(rows[:n_test]), source, tmp / "test")
    except OSError as err:  # an unreadable source file, a full disk: nothing of OUT is left
        raise LdmError(f"cannot write {out}: {first_line(err)}") from None
    return ClipartDataset(out, len(rows) - n_test, n_test, len(authors))
