"""InternVL's torch-free front end: the tile grid (hand-computed cases, the tie rule), the
tiles and the thumbnail, ImageNet normalisation, bad images as one-line errors, mode
conversions, the prompt template and the small tokenizer (rebuilt from the caption data)."""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.core.errors import ToolkitError
from toolkit.models.internvl import image as im
from toolkit.models.internvl.prompt import CAPTION_PROMPT, SYSTEM_MESSAGE, chat_prompt
from toolkit.models.internvl.tokenizer import (
    SPECIALS,
    TINY_TOKENIZER,
    caption_texts,
    tiny_tokenizer,
    train_caption_tokenizer,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "captions"


def _jpeg():
    files = sorted((DATA / "test").glob("*.jpg"))
    if not files:
        pytest.skip(f"the shared caption data is missing ({DATA})")
    return files[0]


def _png(image: Image.Image) -> bytes:
    b = io.BytesIO()
    image.save(b, "PNG")
    return b.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _png_header(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                                0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))


# --- the grid ---------------------------------------------------------------------------------

def test_target_grids_in_internvls_order():
    assert im.target_grids(1, 4) == [(1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4),
                                     (2, 2)]
    grids = im.target_grids(1, 12)
    assert len(grids) == 35 and all(1 <= c * r <= 12 for c, r in grids)
    counts = [c * r for c, r in grids]
    assert counts == sorted(counts)


@pytest.mark.parametrize("size,max_num,grid,tiles", [
    ((224, 224), 12, (1, 1), 1),       # square ties (2,2), (3,3): too small to take them
    ((896, 896), 12, (2, 2), 5),       # area 802 816 > 0.5·448²·4 → (2,2); not > 0.5·448²·9
    ((1344, 1344), 12, (3, 3), 10),    # 1 806 336 > 903 168 → (3,3); (4,4) is 16 > 12
    ((1000, 300), 12, (3, 1), 4),      # 3.33: (3,1) and (6,2) tie; too small for (6,2)
    ((300, 1000), 12, (1, 3), 4),
    ((1344, 896), 6, (3, 2), 7),       # exactly 3:2
    ((672, 448), 2, (2, 1), 3),        # 1.5: (1,1) and (2,1) tie; 301 056 > 200 704 → (2,1)
    ((150, 100), 2, (1, 1), 1),        # the same tie, 15 000 pixels: stays (1,1)
    ((4000, 100), 12, (12, 1), 13),
    ((5000, 3000), 1, (1, 1), 1),      # max_num 1: one tile, no thumbnail
])
def test_grid_and_tile_count(size, max_num, grid, tiles):
    assert im.closest_grid(*size, 1, max_num, 448) == grid
    values, tiling = im.pixel_values(Image.new("RGB", size, (90, 120, 200)), max_num)
    assert (tiling.cols, tiling.rows) == grid and tiling.count == tiles
    assert values.shape == (tiles, 3, 448, 448) and values.dtype == np.float32
    assert tiling.thumbnail == (tiles > 1)


def test_tiles_row_by_row_then_thumbnail():
    img = Image.new("RGB", (896, 896))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for i, c in enumerate(colours):
        img.paste(c, ((i % 2) * 448, (i // 2) * 448, (i % 2) * 448 + 448, (i // 2) * 448 + 448))
    tiles, tiling = im.tile_image(img, max_num=12)
    assert len(tiles) == 5 and tiling.count == 5
    for tile, c in zip(tiles, colours):
        assert tile.size == (448, 448)
        assert tuple(np.asarray(tile)[100:300, 100:300].reshape(-1, 3).mean(0).round()) == c
    thumb = np.asarray(tiles[4])
    assert tuple(thumb[50, 50]) == colours[0] and tuple(thumb[400, 400]) == colours[3]


def test_bicubic_resize_and_imagenet_normalisation():
    img = Image.new("RGB", (300, 200), (255, 0, 128))
    values, _ = im.pixel_values(img, max_num=1)
    mean, std = np.array(im.IMAGENET_MEAN), np.array(im.IMAGENET_STD)
    want = (np.array([255, 0, 128]) / 255 - mean) / std
    np.testing.assert_allclose(values[0, :, 10, 10], want, rtol=1e-6)
    # the resize is Pillow's bicubic, as InternVL (torchvision on a PIL image) does
    grad = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (50, 1, 3)))
    v, _ = im.pixel_values(grad, max_num=1)
    ref = np.asarray(grad.resize((448, 448), Image.Resampling.BICUBIC), np.float32) / 255
    np.testing.assert_allclose(v[0].transpose(1, 2, 0), (ref - mean.astype(np.float32))
                               / std.astype(np.float32), rtol=1e-5, atol=1e-6)


def test_real_caption_image():
    values, tiling = im.load_pixel_values(_jpeg(), max_num=6)
    assert values.shape == (1, 3, 448, 448) and tiling.count == 1
    assert np.isfinite(values).all()


# --- bad input --------------------------------------------------------------------------------

def _error(source, **kw) -> str:
    with pytest.raises(ToolkitError) as err:
        im.open_image(source, **kw)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_bad_images_are_one_line_errors(tmp_path):
    jpeg = _jpeg().read_bytes()
    assert "truncated" in _error(jpeg[: len(jpeg) // 2], name="cut.jpg")
    png = _png(Image.new("RGB", (300, 200), (1, 2, 3)))
    assert "truncated" in _error(png[: len(png) // 2], name="cut.png")
    assert "not an image" in _error(b"hello, not an image" * 10, name="a.txt")
    text = tmp_path / "notes.jpg"
    text.write_text("just text")
    assert "not an image" in _error(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty" in _error(empty)
    assert "does not exist" in _error(tmp_path / "missing.png")
    assert "not a file" in _error(tmp_path)
    assert "zero size (0×10" in _error(_png_header(0, 10), name="zero.png")
    cut = bytearray(jpeg)
    sof = cut.find(b"\xff\xc0")
    cut[sof + 5:sof + 7] = b"\0\0"
    assert "zero size (224×0" in _error(bytes(cut), name="zero.jpg")


def test_decompression_bombs_name_the_limit():
    msg = _error(_png_header(20000, 20000), name="bomb.png")
    assert "20000×20000" in msg and "89,478,485 pixels" in msg
    # below Pillow's own error threshold, above ours
    msg = _error(_png(Image.new("RGB", (100, 100))), name="big.png", max_pixels=5000)
    assert "10,000 pixels" in msg and "limit of 5,000" in msg


@pytest.mark.parametrize("mode,value,want", [
    ("L", 128, (128, 128, 128)),
    ("LA", (200, 0), (200, 200, 200)),                 # alpha dropped, as InternVL
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)),           # no compositing onto a background
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("I;16", 65535, (255, 255, 255)),                  # 16-bit scaled, not clipped
    ("I;16", 32896, (128, 128, 128)),
    ("1", 1, (255, 255, 255)),
])
def test_modes_become_rgb(mode, value, want):
    img = Image.new(mode, (8, 8), value)
    assert im.describe_conversion(mode)
    out = im.to_rgb(img)
    assert out.mode == "RGB" and tuple(out.getpixel((3, 3))) == want


def test_palette_and_encoded_modes_through_open():
    p = Image.new("P", (16, 16))
    p.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    p.paste(1, (0, 0, 16, 16))
    rgb = im.open_image(_png(p), name="p.png")
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (250, 10, 20)
    b = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(b, "JPEG", quality=95)
    r, g, bl = im.open_image(b.getvalue(), name="cmyk.jpg").getpixel((10, 10))
    assert r > 240 and g < 15 and bl < 15
    assert im.describe_conversion("RGB") is None


# --- prompt and tokenizer ---------------------------------------------------------------------

def test_chat_prompt_is_internvls():
    text = chat_prompt("Hermes-2", tiles=2, per_tile=3)
    assert text == ("<|im_start|>system\n" + SYSTEM_MESSAGE + "<|im_end|><|im_start|>user\n<img>"
                    + "<IMG_CONTEXT>" * 6 + "</img>\n" + CAPTION_PROMPT
                    + "<|im_end|><|im_start|>assistant\n")
    assert chat_prompt("internlm2-chat", 2, 3) == text     # same text; InternLM2 adds <s>
    with pytest.raises(ToolkitError):
        chat_prompt("vicuna", 1, 1)


def test_tiny_tokenizer_round_trip_and_specials():
    tok = tiny_tokenizer()
    assert [tok.token_id(s) for s in SPECIALS] == list(range(len(SPECIALS)))
    text = "A large red circle is to the left of a small blue star."
    assert tok.decode(tok.encode(text)) == text
    ids = tok.encode(chat_prompt("Hermes-2", 1, 64))
    assert ids.count(tok.token_id("<IMG_CONTEXT>")) == 64
    assert tok.decode(tok.encode("ünïcode ✓ 字")) == "ünïcode ✓ 字"   # byte-level: any text


def test_committed_tokenizer_is_rebuilt_exactly():
    if not (DATA / "annotations" / "shapes_train_chat.jsonl").is_file():
        pytest.skip(f"the shared caption data is missing ({DATA})")
    rebuilt = json.loads(train_caption_tokenizer(caption_texts(DATA)).to_str())
    committed = json.loads(TINY_TOKENIZER.read_text())
    assert rebuilt["model"] == committed["model"]
    assert rebuilt["added_tokens"] == committed["added_tokens"]


def test_front_end_needs_no_torch():
    """The preprocessing, prompt and tokenizer modules are what the (future) artifact runtime
    uses: they run in a process where importing torch or transformers raises."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError(name, name=name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from PIL import Image\n"
        "from toolkit.models.internvl import image, prompt, tokenizer\n"
        "v, t = image.pixel_values(Image.new('RGB', (900, 450)), 6)\n"
        "ids = tokenizer.tiny_tokenizer().encode(prompt.chat_prompt('Hermes-2', t.count, 64))\n"
        "print(v.shape, t.count, len(ids))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:5] == ["(3,", "3,", "448,", "448)", "3"]
