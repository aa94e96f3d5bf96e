"""InternVL's image preprocessing, torch-free (Pillow + NumPy), so the runtime can use it.

What InternVL's own scripts do (``load_image`` → ``dynamic_preprocess`` → ``build_transform``):

1. open the file and convert it to RGB;
2. choose a grid of ``cols × rows`` tiles (``1 <= cols·rows <= max_num``) whose aspect ratio is
   closest to the image's; on a tie the later (more tiles) grid wins when the image's area is
   more than half of that grid's area at ``image_size`` per tile;
3. resize the image to ``cols·S × rows·S`` (bicubic) and cut it into ``S × S`` tiles, row by row;
4. with more than one tile, append a thumbnail (the whole image resized to ``S × S``);
5. per tile: ``/ 255``, minus the ImageNet mean, over the ImageNet std → float32 [3, S, S].

Input checks (each a one-line ``ToolkitError``): a missing or empty file, a file Pillow cannot
identify as an image, a truncated or corrupt image, a decompression bomb (more than
``MAX_PIXELS`` pixels, checked from the header before any pixel is decoded), a zero-sized image.

Conversions (documented, never silent in the docs; ``describe_conversion`` says which one ran):
grayscale, palette, CMYK, YCbCr, LAB, HSV and 1-bit images go through Pillow's ``convert("RGB")``
as InternVL does; an alpha channel (RGBA, LA, PA, palette transparency) is **dropped** as in
InternVL's ``convert("RGB")`` (the stored colour of transparent pixels is kept; no
compositing); 16-bit and 32-bit integer grayscale is scaled to 8 bits (v / 257, clipped) —
Pillow's own ``convert`` would clip it to 255 and whiten the picture; float images are clipped
to 0…255. EXIF orientation is not applied (InternVL does not either). Animated images: the
first frame.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ...core.errors import ToolkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TILE = 448                  # InternVL2's tile (InternViT-300M-448px)
MAX_TILES = 12              # InternVL's default max_num
# Pillow's own decompression-bomb threshold (Image.MAX_IMAGE_PIXELS' default, 89 478 485: a
# 0.25 GiB 32-bit image); checked here explicitly, so a caller that changed Pillow's global
# setting still gets the limit
MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class Tiling:
    """How one image was cut: the grid (cols × rows) and whether a thumbnail was appended."""

    cols: int
    rows: int
    thumbnail: bool

    @property
    def count(self) -> int:
        """Tiles fed to the vision encoder (grid + thumbnail)."""
        return self.cols * self.rows + int(self.thumbnail)


def target_grids(min_num: int = 1, max_num: int = MAX_TILES) -> list[tuple[int, int]]:
    """Every (cols, rows) with ``min_num <= cols·rows <= max_num``, in InternVL's order: by tile
    count, and within one count in the iteration order of the Python set InternVL builds (the
    order decides ties, so it is built the same way)."""
    grids = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
                for j in range(1, n + 1) if min_num <= i * j <= max_num)
    return sorted(grids, key=lambda g: g[0] * g[1])


def closest_grid(width: int, height: int, min_num: int = 1, max_num: int = MAX_TILES,
                 image_size: int = TILE) -> tuple[int, int]:
    """The (cols, rows) grid InternVL picks for a ``width × height`` image."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for grid in target_grids(min_num, max_num):
        diff = abs(aspect - grid[0] / grid[1])
        if diff < best_diff:
            best, best_diff = grid, diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * grid[0] * grid[1]:
            best = grid
    return best


def tile_image(image: Image.Image, min_num: int = 1, max_num: int = MAX_TILES,
               image_size: int = TILE, use_thumbnail: bool = True):
    """InternVL's ``dynamic_preprocess``: (list of ``image_size`` square RGB tiles, Tiling)."""
    if max_num < min_num or min_num < 1:
        raise ToolkitError(f"--max-tiles must be at least {max(min_num, 1)} (got {max_num})")
    cols, rows = closest_grid(image.width, image.height, min_num, max_num, image_size)
    resized = image.resize((cols * image_size, rows * image_size), Image.Resampling.BICUBIC)
    tiles = []
    for i in range(cols * rows):
        x, y = (i % cols) * image_size, (i // cols) * image_size
        tiles.append(resized.crop((x, y, x + image_size, y + image_size)))
    thumb = use_thumbnail and len(tiles) != 1
    if thumb:
        tiles.append(image.resize((image_size, image_size), Image.Resampling.BICUBIC))
    return tiles, Tiling(cols, rows, thumb)


def normalize(tile: Image.Image) -> np.ndarray:
    """torchvision's ToTensor + Normalize(ImageNet): float32 [3, H, W]."""
    x = np.asarray(tile, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def pixel_values(image: Image.Image, max_num: int = MAX_TILES, image_size: int = TILE,
                 use_thumbnail: bool = True):
    """An RGB image → (float32 [tiles, 3, S, S], Tiling), exactly as InternVL's ``load_image``."""
    if image.mode != "RGB":
        image = to_rgb(image)
    tiles, tiling = tile_image(image, 1, max_num, image_size, use_thumbnail)
    return np.stack([normalize(t) for t in tiles]), tiling


def load_pixel_values(source, max_num: int = MAX_TILES, image_size: int = TILE,
                      use_thumbnail: bool = True, max_pixels: int = MAX_PIXELS):
    """A file path or encoded bytes → (pixel values, Tiling); input errors are one line."""
    return pixel_values(open_image(source, max_pixels), max_num, image_size, use_thumbnail)


# --- reading and checking ---------------------------------------------------------------------

def open_image(source, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """Decode ``source`` (a path, or the bytes of an encoded image) into an RGB image, fully
    loaded, or raise one line saying what is wrong with it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, what = bytes(source), name or "the image"
    else:
        path = Path(source)
        what = name or str(path)
        if not path.exists():
            raise ToolkitError(f"{what} does not exist")
        if not path.is_file():
            raise ToolkitError(f"{what} is not a file; give an image file (JPEG, PNG, …)")
        data = path.read_bytes()
    if not data:
        raise ToolkitError(f"{what} is empty (0 bytes); give an image file (JPEG, PNG, …)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        size = header_size(data)
        if size is not None and 0 in size:   # Pillow refuses a zero-sized image as unknown
            raise ToolkitError(f"{what} has zero size ({size[0]}×{size[1]} pixels)") from None
        raise ToolkitError(f"{what} is not an image Pillow can read (JPEG, PNG, WebP, GIF, BMP, "
                           "TIFF, …)") from None
    except Image.DecompressionBombError:
        size = header_size(data)
        dims = f" ({size[0]}×{size[1]})" if size else ""
        raise ToolkitError(f"{what}{dims} is more than the limit of {max_pixels:,} pixels "
                           "(a decompression bomb?); resize it first") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ToolkitError(f"{what} is corrupt ({_why(exc)}); re-save or re-export it") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ToolkitError(f"{what} has zero size ({width}×{height} pixels)")
    if width * height > max_pixels:
        raise ToolkitError(f"{what} is {width}×{height} = {width * height:,} pixels, more than "
                           f"the limit of {max_pixels:,} (a decompression bomb?); resize it "
                           "first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError:
        raise ToolkitError(f"{what} is too large: more than {max_pixels:,} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ToolkitError(f"{what} is truncated or corrupt ({_why(exc)}); re-save or "
                           "re-export it") from None
    return to_rgb(image)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, GIF or JPEG header without decoding (None if not one)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 9 < len(data) and data[at] == 0xFF:
            marker = data[at + 1]
            length = int.from_bytes(data[at + 2:at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # a SOF segment
                return (int.from_bytes(data[at + 7:at + 9], "big"),
                        int.from_bytes(data[at + 5:at + 7], "big"))
            at += 2 + length
    return None


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    return text.rstrip(".")


def describe_conversion(mode: str) -> str | None:
    """What ``to_rgb`` does to an image of ``mode`` (None for RGB: nothing)."""
    if mode == "RGB":
        return None
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return f"{mode} → RGB: the alpha channel is dropped (as InternVL's convert('RGB'))"
    if mode.startswith("I;16") or mode == "I":
        return f"{mode} → RGB: {mode} grayscale scaled to 8 bits (v / 257)"
    if mode == "F":
        return "F → RGB: float grayscale clipped to 0…255"
    return f"{mode} → RGB (Pillow's convert, as InternVL)"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB, as the module docstring lists."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image).astype(np.float64)
        if mode != "F":
            a = a / 257.0
        gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return image.convert("RGB")
