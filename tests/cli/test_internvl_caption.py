"""``toolkit caption`` as a user runs it: the default model, an artifact, JSON and file output,
converted image modes, and the one-line errors for bad images."""

import json
import struct
import zlib

import pytest
from PIL import Image

from support.cli import fails_cleanly, run_toolkit
from toolkit.models.internvl.default import default_checkpoint
from toolkit.runtime.graphs import make_pipeline, open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs


@pytest.fixture(scope="module")
def jpgs(shared_data):
    return sorted((shared_data / "captions" / "test").glob("*.jpg"))[:2]


@pytest.fixture(scope="module")
def expected(internvl_artifact, jpgs):
    """The pipeline's own captions on the artifact (greedy and beam 5), in this process."""
    pipe = make_pipeline(open_artifact(internvl_artifact, "internvl", "ort"), from_graphs)
    out = {(p, b): pipe.caption_one(p, beam_size=b, max_tiles=6).text
           for p in jpgs for b in (1, 5)}
    pipe.close()
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int) -> bytes:
    """A PNG (valid chunks, no pixel data) claiming ``width`` × ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b""))


def test_the_default_model_captions_an_image(jpgs):
    r = run_toolkit("caption", jpgs[0], "--beam-size", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip()
    if default_checkpoint() is None:    # until the trained captioner is installed
        assert "random weights (preset internvl-tiny)" in r.stderr
    else:
        assert "random weights" not in r.stderr


def test_an_artifact_beam_5_by_default(internvl_artifact, jpgs, expected):
    r = run_toolkit("caption", jpgs[0], "--artifact", internvl_artifact)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip("\n") == expected[(jpgs[0], 5)]
    assert "random weights" in r.stderr


def test_json_and_several_images_to_a_file(internvl_artifact, jpgs, expected, tmp_path):
    out = tmp_path / "caps.jsonl"
    r = run_toolkit("caption", *jpgs, "--artifact", internvl_artifact, "--beam-size", "1",
                    "--json", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in jpgs]
    assert [row["caption"] for row in rows] == [expected[(p, 1)] for p in jpgs]
    for row in rows:
        assert 8 <= row["tokens"] <= 30 and row["tiles"] == 1
        t = row["timings"]
        assert t["vision_ms"] > 0 and t["prefill_ms"] > 0 and t["ms_per_token"] > 0
    fails_cleanly("caption", jpgs[0], "--artifact", internvl_artifact, "-o", out,
                  contains="exists")
    r = run_toolkit("caption", *jpgs, "--artifact", internvl_artifact, "--beam-size", "1")
    assert r.stdout.splitlines() == [f"{p}\t{expected[(p, 1)]}" for p in jpgs]


def test_grayscale_cmyk_and_alpha_images_are_converted(internvl_artifact, jpgs, tmp_path):
    src = Image.open(jpgs[0])
    files = {"L": tmp_path / "gray.png", "CMYK": tmp_path / "cmyk.jpg",
             "RGBA": tmp_path / "alpha.png"}
    for mode, path in files.items():
        src.convert(mode).save(path)
    r = run_toolkit("caption", *files.values(), "--artifact", internvl_artifact,
                    "--beam-size", "1")
    assert r.returncode == 0, r.stderr
    caps = r.stdout.splitlines()
    assert len(caps) == 3 and all(c.split("\t")[1].strip() for c in caps)
    assert f"{files['L']}: L → RGB" in r.stderr
    assert f"{files['CMYK']}: CMYK → RGB" in r.stderr
    assert "alpha channel is dropped" in r.stderr


def test_bad_images_are_one_line(internvl_artifact, jpgs, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    truncated = tmp_path / "half.jpg"
    data = jpgs[0].read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    zero = tmp_path / "zero.png"
    zero.write_bytes(_png(0, 10))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(10000, 10000))          # 100 M pixels claimed, a few bytes on disk
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    a = ("--artifact", internvl_artifact)
    fails_cleanly("caption", text, *a, contains="not an image Pillow can read")
    fails_cleanly("caption", truncated, *a, contains="truncated or corrupt")
    fails_cleanly("caption", zero, *a, contains="zero size (0×10 pixels)")
    fails_cleanly("caption", bomb, *a, contains="100,000,000 pixels, more than the limit of 89,478,485")
    fails_cleanly("caption", empty, *a, contains="is empty")
    fails_cleanly("caption", tmp_path / "missing.jpg", *a, contains="does not exist")
    fails_cleanly("caption", jpgs[0], truncated, *a, contains=str(truncated))  # checked first


def test_option_errors(internvl_artifact, jpgs):
    a = ("--artifact", internvl_artifact)
    fails_cleanly("caption", jpgs[0], *a, "--beam-size", "9", contains="--beam-size")
    fails_cleanly("caption", jpgs[0], *a, "--max-tiles", "0", contains="--max-tiles")
    fails_cleanly("caption", jpgs[0], *a, "--prompt", " ", contains="--prompt is empty")
    fails_cleanly("caption", jpgs[0], *a, "--precision", "fp8", contains="unknown precision")
    fails_cleanly("caption", jpgs[0], *a, "--preset", "internvl-tiny", contains="not both")
    fails_cleanly("caption", contains="missing argument IMAGES")


def test_the_trained_captioner_is_the_default_once_installed(tmp_path, monkeypatch, jpgs):
    """With a checkpoint at the captioner's place, no model option loads it (not the random
    preset), and its cached export then opens without loading the model (no PyTorch)."""
    from support.internvl import noisy_tiny, save_original
    from toolkit import registry
    from toolkit.models.internvl import default, loading

    ckpt = save_original(noisy_tiny(), tmp_path / "captioner")
    monkeypatch.setattr(default, "captioner_dir", lambda: ckpt)
    fam = registry.get("internvl")
    pipe = fam.open_pipeline()
    assert not pipe.random_init and pipe.source["name"] == "captioner"
    first = pipe.caption_one(jpgs[0], beam_size=1).text
    pipe.close()
    assert fam.count_parameters() == 5_659_712

    def no_loading(*a, **k):
        raise AssertionError("the cached default export should open without loading the model")

    monkeypatch.setattr(loading, "load_model", no_loading)
    pipe = fam.open_pipeline()
    assert pipe.source["name"] == "captioner" and pipe.caption_one(jpgs[0], beam_size=1).text \
        == first
    pipe.close()
