"""Decoding images and label masks the same way everywhere (EXIF orientation, mode conversion)."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segpipe.errors import SegpipeError

EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class DecodeError(SegpipeError):
    """An image or mask file cannot be decoded (missing, corrupt, truncated, unknown format)."""


class NotAnImage(DecodeError):
    """The bytes are in no image format that Pillow reads."""


class UnsupportedMode(DecodeError):
    """The image decodes, but its pixels have no RGB meaning (32-bit float, multi-band)."""


class TooLarge(DecodeError):
    """An image or mask has more pixels than the limit (``clean.max_pixels``): it is refused from its header,
    before anything is decoded, so a huge file or a decompression bomb cannot exhaust the machine's memory."""


PIL_BOMB_PIXELS = 2 * 89_478_485  # Pillow's own limit, which the default limit never passes
Image.MAX_IMAGE_PIXELS = None  # every image segpipe opens is checked against its own limit below, from the header
BYTES_PER_PIXEL = 64  # what decoding, converting and caching one pixel may take at once, with room to spare
_limit: int | None = None  # clean.max_pixels of the stage running in this process (None: the machine's)
_limit_setting = "clean.max_pixels"  # the setting that the user raises, named in the error


def machine_pixel_limit() -> int:
    """The default pixel limit: what every core can decode at once in a share of this machine's memory (at most
    Pillow's own bomb limit)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(PIL_BOMB_PIXELS, memory // (BYTES_PER_PIXEL * (os.cpu_count() or 1)))


def set_pixel_limit(limit: int | None, setting: str = "clean.max_pixels") -> None:
    """Use ``limit`` (None: :func:`machine_pixel_limit`) for every decode in this process; ``setting`` is what the
    user raises (``clean.max_pixels``, ``--max-pixels``), named in the error."""
    global _limit, _limit_setting
    _limit, _limit_setting = limit, setting


def pixel_limit() -> int:
    return _limit or machine_pixel_limit()


def _check_pixels(img: Image.Image, path: str | Path) -> None:
    width, height = img.size
    if width * height > pixel_limit():
        raise TooLarge(f"{path}: {width}x{height} is {width * height:,} pixels, more than the limit of "
                       f"{pixel_limit():,} ({_limit_setting}); shrink the image or raise {_limit_setting}")




@dataclass
class DecodedImage:
    """An RGB image as an HxWx3 uint8 array plus what was done to get there."""

    pixels: np.ndarray
    repairs: list[str] = field(default_factory=list)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_fully(source: str | Path | io.BytesIO, name: str | Path) -> Image.Image:
    try:
        img = Image.open(source)
        _check_pixels(img, name)  # from the header: nothing is decoded yet (a decompression bomb never is)
        img.load()
        return img
    except FileNotFoundError:
        raise DecodeError(f"{name}: file not found") from None
    except UnidentifiedImageError:
        raise NotAnImage(f"{name}: cannot be decoded (not an image in a format Pillow reads: PNG, JPEG, TIFF, "
                         f"BMP, WebP, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"{name}: cannot be decoded ({exc})") from None


def oriented_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image after its EXIF orientation is applied, reading only the header."""
    try:
        with Image.open(path) as img:
            _check_pixels(img, path)
            width, height = img.size
            orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"{path}: cannot be read ({exc})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_rgb(img: Image.Image, repairs: list[str], name: str | Path) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "F":
        raise UnsupportedMode(f"{name}: 32-bit float pixels (mode F) have no RGB meaning; send 8- or 16-bit RGB, "
                              f"RGBA or greyscale")
    repairs.append(f"converted {img.mode} to RGB")
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(img, dtype=np.int64)
        eight = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        background = Image.new("RGB", img.size, (0, 0, 0))
        rgba = img.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def load_image(path: str | Path) -> DecodedImage:
    """Decode an image as RGB uint8 with EXIF orientation applied; list any conversion in ``repairs``."""
    return _decoded(_open_fully(path, path), path)


def decode_image(data: bytes, name: str) -> DecodedImage:
    """:func:`load_image` for an image's bytes (``name`` names it in errors)."""
    return _decoded(_open_fully(io.BytesIO(data), name), name)


def _decoded(img: Image.Image, name: str | Path) -> DecodedImage:
    repairs: list[str] = []
    orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        repairs.append(f"applied EXIF orientation {orientation}")
    img = _to_rgb(img, repairs, name)
    return DecodedImage(np.asarray(img, dtype=np.uint8).copy(), repairs)


def load_label(path: str | Path) -> np.ndarray:
    """Decode a single-channel label PNG (8 or 16 bit, or palette indices) as an integer HxW array."""
    img = _open_fully(path, path)
    if img.mode in ("L", "P", "1"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img, dtype=np.int64).astype(np.int32)
    raise DecodeError(f"{path}: label mask has mode {img.mode}; expected a single-channel (L, P or 16-bit) PNG")


def load_color_label(path: str | Path) -> np.ndarray:
    """Decode a colour-coded mask as HxWx3 uint8 (alpha dropped)."""
    img = _open_fully(path, path)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def save_instance_map(array: np.ndarray, path: str | Path) -> None:
    """Write an instance-id map as a 16-bit PNG (0 = no instance), whatever its values."""
    Image.fromarray(array.astype(np.uint16)).save(path, format="PNG")


def save_label(array: np.ndarray, path: str | Path) -> None:
    """Write a label array as an 8-bit PNG, or 16-bit when values exceed 255."""
    if array.size and int(array.max()) > 255:
        Image.fromarray(array.astype(np.uint16)).save(path, format="PNG")
    else:
        Image.fromarray(array.astype(np.uint8), mode="L").save(path, format="PNG")
