"""Read the colour, shape and position of the object in a synthetic shapes image.

Used to judge generated images against their prompts (`prompt_fidelity`): did the model draw the
colour and the shape it was asked for? It works for single-object images of `ldm.data.shapes.generator`:

1. the background is the colour most corners agree on (objects never reach the corners),
2. every pixel gets a soft "object" weight: how far its colour has moved from the background,
   relative to the furthest pixel (edges blended by antialiasing count partly),
3. the colour is the mean of the clearly-object pixels, named by the nearest of `ALL_COLOURS` (the
   default palette and the colours only drawn when asked for, such as pink),
4. the shape is the template (circle, square, triangle, drawn as `ldm.data.shapes.generator` draws them, at
   the object's centroid and with its area) that overlaps the weight map best,
5. the position is the named position nearest the centroid.

Plain numpy and PIL: nothing in the libraries reads these attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ldm.data.shapes.generator import ALL_COLOURS, BACKGROUNDS, POSITIONS, SHAPES

CORE = 0.6  # weight above which a pixel counts as object for its colour (not an antialiased edge)
MIN_OBJECT_PIXELS = 2.0  # total weight below this: the image holds no object
TEMPLATE_SUPERSAMPLE = 4  # templates are drawn large and averaged down, like the data itself
CORNER = 2  # side of the corner patches the background is read from


@dataclass(frozen=True)
class Reading:
    colour: str | None
    shape: str | None
    position: str | None
    background: str | None = None


def _as_array(image) -> np.ndarray:
    """(H, W, 3) float RGB in 0..255, from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.asarray(image, dtype=np.float32)[..., :3]


def background_colour(pixels: np.ndarray) -> np.ndarray:
    """The colour of the corner patch that agrees best with the others (robust to one covered)."""
    c = CORNER
    corners = [pixels[:c, :c], pixels[:c, -c:], pixels[-c:, :c], pixels[-c:, -c:]]
    means = np.stack([patch.reshape(-1, 3).mean(0) for patch in corners])
    spread = [np.abs(means - m).sum() for m in means]
    return means[int(np.argmin(spread))]


def object_weights(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-pixel weight in [0, 1]: distance from the background, relative to the furthest pixels."""
    distance = np.linalg.norm(pixels - background, axis=-1)
    top = np.percentile(distance, 99)
    if top < 1e-6:
        return np.zeros_like(distance)
    # The object's own colour sits at the top of the distance range; noise near the background
    # (generated images are never perfectly flat) is cut off below a fifth of it.
    return np.clip((distance / top - 0.2) / 0.6, 0.0, 1.0)


def nearest_colour(rgb: np.ndarray, palette: dict = ALL_COLOURS) -> str:
    names = list(palette)
    table = np.array([palette[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=1)))]


def template(shape: str, cx: float, cy: float, area: float, side: int) -> np.ndarray:
    """The shape drawn as `ldm.data.shapes.generator` draws it, centred at the centroid, with this area."""
    big = side * TEMPLATE_SUPERSAMPLE
    k = TEMPLATE_SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    # Pixel (i, j) covers [j, j+1) x [i, i+1); centroids are measured at pixel centres.
    x, y = (cx + 0.5) * k, (cy + 0.5) * k
    if shape == "circle":
        r = np.sqrt(area / np.pi) * k
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    elif shape == "square":
        s = np.sqrt(area) / 2 * k
        draw.rectangle([x - s, y - s, x + s, y + s], fill=255)
    else:  # apex up, base at 0.8 r below the centre: area 1.8 r^2, centroid 0.2 r below the centre
        r = np.sqrt(area / 1.8) * k
        y -= 0.2 * r
        draw.polygon([(x, y - r), (x + r, y + 0.8 * r), (x - r, y + 0.8 * r)], fill=255)
    small = canvas.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def read_shape(weights: np.ndarray) -> tuple[str, float, float]:
    """(shape, centroid x, centroid y) of the weight map: the template that fits it best."""
    h, w = weights.shape
    area = float(weights.sum())
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = float((weights * xs).sum() / area), float((weights * ys).sum() / area)
    errors = {shape: float(np.abs(template(shape, cx, cy, area, w) - weights).sum()) for shape in SHAPES}
    return min(errors, key=errors.get), cx, cy


def nearest_position(cx: float, cy: float, side: int) -> str:
    return min(POSITIONS, key=lambda name: (POSITIONS[name][0] * side - cx - 0.5) ** 2
               + (POSITIONS[name][1] * side - cy - 0.5) ** 2)


def read_image(image) -> Reading:
    """The colour, shape and position of the single object in `image` (None where there is none)."""
    pixels = _as_array(image)
    background = background_colour(pixels)
    background_name = nearest_colour(background, BACKGROUNDS)
    weights = object_weights(pixels, background)
    if weights.sum() < MIN_OBJECT_PIXELS:
        return Reading(None, None, None, background_name)
    core = weights >= CORE
    colour = nearest_colour(pixels[core].mean(0) if core.any() else pixels[weights > 0].mean(0))
    shape, cx, cy = read_shape(weights)
    return Reading(colour, shape, nearest_position(cx, cy, pixels.shape[1]), background_name)


def prompt_fidelity(images, attributes) -> dict[str, float]:
    """Share of images showing the prompted attributes.

    `attributes`: one mapping per image with "colour" and "shape" (and optionally "position").
    Returns the fractions right for colour, shape, both ("colour_and_shape") and position (over
    the images whose attributes name one), "by_background": colour and shape right among the images
    drawn on each background (black, gray, white), whichever background the model chose, and
    "background_counts": how many images were drawn on each.
    """
    images, attributes = list(images), list(attributes)
    if len(images) != len(attributes):
        raise ValueError(f"{len(images)} images but {len(attributes)} attribute sets")
    if not images:
        raise ValueError("no images to judge")
    colour = shape = both = position = with_position = 0
    backgrounds: dict[str, list[bool]] = {}
    for image, wanted in zip(images, attributes):
        seen = read_image(image)
        colour_ok, shape_ok = seen.colour == wanted["colour"], seen.shape == wanted["shape"]
        colour += colour_ok
        shape += shape_ok
        both += colour_ok and shape_ok
        backgrounds.setdefault(seen.background, []).append(colour_ok and shape_ok)
        if wanted.get("position"):
            with_position += 1
            position += seen.position == wanted["position"]
    n = len(images)
    result = {"colour": colour / n, "shape": shape / n, "colour_and_shape": both / n,
              "by_background": {name: sum(right) / len(right) for name, right in sorted(backgrounds.items())},
              "background_counts": {name: len(right) for name, right in sorted(backgrounds.items())}}
    if with_position:
        result["position"] = position / with_position
    return result
