"""Synthetic image-caption data: coloured shapes on plain backgrounds.

`ldm data shapes OUT` writes an imagefolder dataset (PNG files plus metadata.jsonl) whose captions
compose colour, shape, size, position and background, worded by several templates so that a model
has to learn words rather than whole sentences. Every attribute is also its own metadata field, so
evaluation can check generated images against the prompt.

A fixed set of (colour, shape, position) combinations never appears in OUT/train; OUT/test holds
images of exactly those combinations, for judging whether a model composes what it learned.
`load_dataset("imagefolder", data_dir=OUT)` reads the two folders as the splits "train" and "test".

`colours` restricts the objects to some colours, including ones the default data never draws
(`NEW_COLOURS`, e.g. `ldm data shapes OUT --colours pink`): data for teaching a model trained on the
default data a word it never saw. Both splits then draw from those colours alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from ldm.core.atomic import atomic_folder
from ldm.core.errors import LdmError

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 20),
}
# Colours the default data never draws, only asked for by name (`colours=`): a model trained on the
# default data has never seen them, nor their words. Far from every colour above and the backgrounds.
NEW_COLOURS = {"pink": (255, 105, 180)}
ALL_COLOURS = {**COLOURS, **NEW_COLOURS}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Object centres as fractions of the image side, named as the captions say them.
POSITIONS = {
    "in the top left": (0.3, 0.3),
    "in the top right": (0.7, 0.3),
    "in the bottom left": (0.3, 0.7),
    "in the bottom right": (0.7, 0.7),
    "in the center": (0.5, 0.5),
}
BACKGROUNDS = {"black": (10, 10, 10), "gray": (128, 128, 128), "white": (245, 245, 245)}
# Half the object's extent, as a fraction of the side. Small objects are 10 px across at 32 px:
# at 8 px (0.13) a square or triangle lost its corners in an f=4 autoencoder (2x2 latent cells)
# and came back round. Two small objects in neighbouring positions still do not overlap.
RADIUS = {"small": 0.16, "large": 0.24}
TWO_OBJECT_SHARE = 0.25
SUPERSAMPLE = 4  # draw large and downsample, for smooth edges

# (colour, shape, position) combinations kept out of the training split. Each colour, shape and
# position still appears in training, and every colour-shape pair is seen in other positions.
HELD_OUT = (
    ("red", "triangle", "in the top left"),
    ("green", "circle", "in the bottom right"),
    ("blue", "square", "in the center"),
    ("yellow", "triangle", "in the bottom left"),
    ("purple", "circle", "in the top right"),
    ("orange", "square", "in the top left"),
    ("red", "circle", "in the center"),
    ("blue", "triangle", "in the bottom right"),
)

# The plain prompt for one object, e.g. "a red triangle in the top left": what evaluation prompts
# with (the held-out combinations, CLIP's zero-shot attribute prompts, the real images described by
# their attributes). It is also a caption template below, so models train on prompts worded so.
PLAIN_PROMPT = "a {colour} {shape} {position}"

ONE_OBJECT_TEMPLATES = (
    "a {size} {colour} {shape} {position} on a {background} background",
    "{position}, a {size} {colour} {shape} on {background}",
    "a {colour} {shape}, {size}, {position}, {background} background",
    "a picture of a {size} {colour} {shape} {position}",
    "there is a {colour} {shape} {position} on a {background} background",
    "{background} background with a {size} {colour} {shape} {position}",
    # Captions that leave attributes out, as people's prompts do ("a red circle in the top left"):
    # without them a text encoder only ever sees every attribute named, and reads prompts that
    # omit one as something it has not seen.
    PLAIN_PROMPT,
    "a {size} {colour} {shape}",
    "a {colour} {shape} on a {background} background",
)
TWO_OBJECT_TEMPLATES = (
    "a {colour} {shape} and a {colour2} {shape2} on a {background} background",
    "a {colour} {shape} {position} and a {colour2} {shape2} {position2}",
    "two shapes on {background}: a {colour} {shape} and a {colour2} {shape2}",
)


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    position: str


def is_held_out(obj: ShapeObject) -> bool:
    return (obj.colour, obj.shape, obj.position) in HELD_OUT


def plain_prompt(colour: str, shape: str, position: str) -> str:
    """The plain prompt for one object (`PLAIN_PROMPT`), e.g. 'a red triangle in the top left'."""
    return PLAIN_PROMPT.format(colour=colour, shape=shape, position=position)


def held_out_prompts() -> list[str]:
    """Plain prompts for the held-out combinations, e.g. 'a red triangle in the top left'."""
    return [plain_prompt(colour, shape, position) for colour, shape, position in HELD_OUT]


def _random_object(rng: random.Random, held_out: bool, size: str | None = None,
                   colours: list[str] | None = None) -> ShapeObject:
    if held_out:
        colour, shape, position = rng.choice(HELD_OUT)
        return ShapeObject(colour, shape, size or rng.choice(SIZES), position)
    while True:
        obj = ShapeObject(
            rng.choice(colours or list(COLOURS)), rng.choice(SHAPES), size or rng.choice(SIZES),
            rng.choice(list(POSITIONS)),
        )
        if not is_held_out(obj):
            return obj


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeObject, side: int, jitter: tuple[float, float]):
    cx, cy = POSITIONS[obj.position]
    cx, cy = (cx + jitter[0]) * side, (cy + jitter[1]) * side
    r = RADIUS[obj.size] * side
    fill = ALL_COLOURS[obj.colour]
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        s = r * 0.9  # a square of the same half-extent looks bigger than the circle; even it out
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)


def render(objects: list[ShapeObject], background: str, size: int, rng: random.Random) -> Image.Image:
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    for obj in objects:
        jitter = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04))
        _draw(draw, obj, big, jitter)
    return image.resize((size, size), Image.Resampling.BOX)


def caption(objects: list[ShapeObject], background: str, rng: random.Random) -> str:
    first = objects[0]
    words = dict(colour=first.colour, shape=first.shape, size=first.size,
                 position=first.position, background=background)
    if len(objects) == 1:
        text = rng.choice(ONE_OBJECT_TEMPLATES).format(**words)
    else:
        second = objects[1]
        words.update(colour2=second.colour, shape2=second.shape, position2=second.position)
        text = rng.choice(TWO_OBJECT_TEMPLATES).format(**words)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def make_example(rng: random.Random, size: int, held_out: bool,
                 colours: list[str] | None = None) -> tuple[Image.Image, dict]:
    """One image and its record; `colours`: draw only these (None: the default palette)."""
    background = rng.choice(list(BACKGROUNDS))
    two = not held_out and rng.random() < TWO_OBJECT_SHARE
    if two:  # two small objects in different regions, so they never overlap
        first = _random_object(rng, False, size="small", colours=colours)
        second = _random_object(rng, False, size="small", colours=colours)
        while second.position == first.position:
            second = _random_object(rng, False, size="small", colours=colours)
        objects = [first, second]
    else:
        objects = [_random_object(rng, held_out, colours=colours)]
    image = render(objects, background, size, rng)
    first = objects[0]
    second = objects[1] if two else None
    record = {
        "text": caption(objects, background, rng),
        "colour": first.colour,
        "shape": first.shape,
        "size": first.size,
        "position": first.position,
        "background": background,
        "num_objects": len(objects),
        "colour2": second.colour if second else "",
        "shape2": second.shape if second else "",
        "size2": second.size if second else "",
        "position2": second.position if second else "",
    }
    return image, record


def write_split(folder: Path, n: int, size: int, rng: random.Random, held_out: bool,
                colours: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image, record = make_example(rng, size, held_out, colours)
        name = f"{i:06d}.png"
        image.save(folder / name, format="PNG")
        lines.append(json.dumps({"file_name": name, **record}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def make_shapes_dataset(out: str | Path, n: int = 500, size: int = 32, seed: int = 0,
                        n_test: int | None = None, colours: list[str] | None = None) -> Path:
    """Write OUT/train (n images) and OUT/test (held-out combinations); same seed, same bytes.

    With `colours`, only those colours are drawn, and OUT/test holds more images of them (the
    held-out combinations are of the default palette)."""
    unknown = [name for name in colours or [] if name not in ALL_COLOURS]
    if unknown:
        raise LdmError(f"--colours: unknown colour {unknown[0]!r}; choose from {', '.join(ALL_COLOURS)}")
    if n < 1:
        raise LdmError(f"--n must be at least 1, got {n}")
    if size < 16:
        raise LdmError(f"--size must be at least 16 pixels for the shapes to be legible, got {size}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "train" / "metadata.jsonl").exists():
        raise LdmError(f"{out} exists and is not a shapes dataset; choose an empty or new folder")
    n_test = max(len(HELD_OUT) * 8, n // 5) if n_test is None else n_test
    rng = random.Random(seed)
    # whole or not at all: an interrupted run leaves the folder as it was (an earlier dataset there
    # is replaced only once the new one is complete)
    with atomic_folder(out) as tmp:
        write_split(tmp / "train", n, size, rng, held_out=False, colours=colours)
        write_split(tmp / "test", n_test, size, rng, held_out=not colours, colours=colours)
    return out
