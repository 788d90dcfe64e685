"""Every image that enters ldm, from whatever a source gives, as the 8-bit RGB image training sees.

Training data, the latent cache, `ldm data check`, `--init-image`, the images of an image walk and
evaluation all call `decode_image`, so a file means the same pixels everywhere:

- EXIF orientation applied (a phone photo is trained upright, not sideways);
- transparency composited over a background colour (`data.background`, white by default), not over
  whatever colour hides under the alpha;
- 16-bit, 32-bit integer and float images scaled to 8 bits, not clipped (PIL's `convert("RGB")`
  clips a 16-bit PNG to pure white); palette, LA, CMYK and grayscale images converted to RGB;
- images above a pixel limit (`data.max_pixels`) refused from their header, before any pixel is
  allocated; JPEGs much larger than needed decoded at reduced size (`Image.draft`: the JPEG decoder
  scales by 1/2, 1/4 or 1/8 itself, far faster than decoding everything and resizing).

A file that cannot be used raises `UndecodableImage`, whose `reason` (one of REASONS) is what the
skip warning and `ldm data check` count, and whose message says what exactly went wrong.
`inspect_image` reads a file as the up-front scan of a dataset needs it: its size (upright), format
and mode, decoding the pixels only to prove they are all there.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from ldm.core.errors import LdmError

# Why an image is skipped: the words the warning and `ldm data check` count by.
MISSING = "file not found"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
TOO_MANY_PIXELS = "too many pixels"
UNREADABLE = "unreadable"
REASONS = (MISSING, NOT_AN_IMAGE, TRUNCATED, TOO_MANY_PIXELS, UNREADABLE)

NO_PATH = "<image bytes>"  # what messages call an image that has no file name

DEFAULT_BACKGROUND = "white"
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's decompression-bomb limit (about 89 Mpx)
# PIL itself refuses to open anything above twice its limit (DecompressionBombError), whatever we
# allow: a larger data.max_pixels could never be honoured, so the config refuses one.
PIL_HARD_LIMIT = 2 * Image.MAX_IMAGE_PIXELS

# EXIF orientations that turn the image a quarter (swap width and height when applied).
QUARTER_TURNS = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
SIXTEEN_BIT_MAX = 65535
# Modes whose pixels carry their own alpha; P, L and RGB images may carry a transparent colour
# instead (info["transparency"]).
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class UndecodableImage(Exception):
    """An image that is skipped: `reason` is one of REASONS, the message says what went wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ImageInfo:
    """What the scan of a dataset records about each image, read once and cached with the dataset."""

    width: int  # upright, as training sees it (EXIF orientation applied)
    height: int
    format: str  # PIL's name of the file format: PNG, JPEG, WEBP, ...
    mode: str  # PIL's mode as stored: RGB, RGBA, P, I;16, CMYK, ...


def background_rgb(colour: str) -> tuple[int, int, int]:
    """A colour name PIL's ImageColor knows ("white", "black", "gray") or "#rrggbb", as RGB.
    Raises ValueError for anything else."""
    return ImageColor.getrgb(colour)[:3]


def decode_image(value, background: str = DEFAULT_BACKGROUND, max_pixels: int = DEFAULT_MAX_PIXELS,
                 cover: tuple[int, int] | None = None) -> Image.Image:
    """The RGB image training sees, from a path, bytes, a datasets {"path", "bytes"} value or a PIL image.

    `cover` is the (width, height) the caller will resize the image to cover: a JPEG at least twice
    that size in both directions is decoded at reduced size (never below it). Raises UndecodableImage.
    """
    with _reading(value):
        return _to_rgb(_upright(value, max_pixels, cover), background_rgb(background))


def decode_image_and_alpha(value, background: str = DEFAULT_BACKGROUND, max_pixels: int = DEFAULT_MAX_PIXELS,
                           cover: tuple[int, int] | None = None) -> tuple[Image.Image, Image.Image | None]:
    """`decode_image`'s RGB image and, read before it is composited over the background, the
    image's own alpha as an L image of the same size (None for an image without transparency).
    A loss mask (`data.mask: alpha`, ldm/data/masks.py) is this alpha. Raises UndecodableImage."""
    with _reading(value):
        image = _upright(value, max_pixels, cover)
        alpha = image.convert("RGBA").getchannel("A") if _has_alpha(image) else None
        return _to_rgb(image, background_rgb(background)), alpha


def has_alpha(value, max_pixels: int = DEFAULT_MAX_PIXELS) -> bool:
    """Whether an image carries transparency, read from its header (no pixel decoded; for counting
    the images that `data.mask: alpha` trains at full weight). Raises UndecodableImage."""
    with _reading(value):
        return _has_alpha(_open(value, max_pixels))


def read_image_file(path: str | Path, what: str = "image") -> Image.Image:
    """An image file named on the command line (`--init-image`, a walk's `--images`), decoded as
    training data is with the default settings; what is wrong with it is one LdmError line."""
    try:
        return decode_image(path)
    except UndecodableImage as err:
        if err.reason == MISSING:
            raise LdmError(f"{what} not found: {path}") from None
        raise LdmError(f"cannot read {what}: {err.detail}") from None


def inspect_image(value, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """An image's upright size, format and mode, after checking that all of its pixels decode
    (at reduced size where the format allows: finding a truncated file needs the whole stream
    read, not the whole image allocated). Raises UndecodableImage."""
    with _reading(value):
        image = _open(value, max_pixels)
        stored, file_format, mode = image.size, image.format or "", image.mode
        image.draft(image.mode, (1, 1))  # JPEG: decode at 1/8 size; other formats ignore it
        image.load()
        # read after loading: a PNG may keep its EXIF after the pixels, and loads to find it
        quarter_turn = image.getexif().get(EXIF_ORIENTATION) in QUARTER_TURNS
    width, height = stored[::-1] if quarter_turn else stored
    return ImageInfo(width, height, file_format, mode)


def describe(value) -> str:
    """A name for an image in messages: its path when it has one."""
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    return NO_PATH


# ---- the steps ----------------------------------------------------------------------------------

@contextmanager
def _reading(value):
    """PIL's many exceptions for a bad file, as UndecodableImage with the reason it is skipped."""
    name = describe(value)
    try:
        yield
    except FileNotFoundError:
        raise UndecodableImage(MISSING, name) from None
    except UnidentifiedImageError:
        raise UndecodableImage(NOT_AN_IMAGE, f"{name} is not an image PIL can read") from None
    except Image.DecompressionBombError as err:
        raise UndecodableImage(TOO_MANY_PIXELS, f"{name}: {err}") from None
    except OSError as err:
        reason = TRUNCATED if "truncated" in str(err) else UNREADABLE
        raise UndecodableImage(reason, f"{name}: {err}") from None
    except (SyntaxError, ValueError, EOFError, struct.error) as err:  # broken headers, unknown modes
        raise UndecodableImage(UNREADABLE, f"{name}: {err}") from None


def _open(value, max_pixels: int) -> Image.Image:
    """The image with its header read (PIL opens lazily: no pixel decoded yet), its size checked."""
    if isinstance(value, Image.Image):
        image = value
    else:
        with warnings.catch_warnings():
            # Our own limit is checked below; PIL's warning between its limit and twice it
            # would only repeat it (or contradict a larger data.max_pixels).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(_file_of(value))
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise UndecodableImage(TOO_MANY_PIXELS, f"{describe(value)} is {image.width}x{image.height} = "
                                                f"{pixels} pixels, above data.max_pixels={max_pixels}")
    return image


def _file_of(value):
    if isinstance(value, (str, Path)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(value)
    if isinstance(value, dict):
        return io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    raise TypeError(f"cannot read an image from a {type(value).__name__}")


def _draft(image: Image.Image, cover: tuple[int, int]) -> None:
    """Ask the JPEG decoder (the one PIL can make decode at reduced size) for the smallest of its
    reduced sizes that still covers `cover` once the image is upright."""
    if image.format != "JPEG":
        return
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION) in QUARTER_TURNS:  # a JPEG's EXIF is in its header
        cover = cover[::-1]
    scale = max(cover[0] / width, cover[1] / height)
    needed = (math.ceil(width * scale), math.ceil(height * scale))
    if needed[0] * 2 <= width and needed[1] * 2 <= height:
        image.draft(image.mode, needed)


def _upright(value, max_pixels: int, cover: tuple[int, int] | None) -> Image.Image:
    """The image decoded (at reduced size where `cover` allows), EXIF orientation applied, in 8 bits."""
    image = _open(value, max_pixels)
    if cover is not None:
        _draft(image, cover)
    image.load()
    return _to_eight_bits(ImageOps.exif_transpose(image))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or "transparency" in image.info


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*background, 255)), rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale as 8-bit L, scaled rather than clipped.

    16-bit modes are scaled by 255/65535 (1/257, which maps 65535 to 255 exactly). Mode I (32-bit
    integers) and F (floats) say nothing of their range: I values within 0..65535 are 16-bit data
    (PIL stores some 16-bit files so), F values within 0..1 are the unit range; anything else is
    stretched from the image's own minimum and maximum. numpy does the scaling: PIL's `convert`
    clips these modes instead.
    """
    if image.mode not in SIXTEEN_BIT_MODES | {"I", "F"}:
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and low >= 0 and high <= SIXTEEN_BIT_MAX):
        unit = values / SIXTEEN_BIT_MAX
    elif image.mode == "F" and low >= 0 and high <= 1:
        unit = values
    else:
        unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(np.round(unit * 255).astype(np.uint8), "L")
