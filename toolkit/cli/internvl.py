"""InternVL's own command: ``toolkit caption IMAGE...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import registry
from ..core.errors import ToolkitError
from ..core.files import atomic_write_bytes
from ..core.precisions import check_family_precision
from ..models.internvl.image import describe_conversion, open_image
from ..models.internvl.prompt import CAPTION_PROMPT
from .base import Artifact, Backend, Checkpoint, Preset, Seed, note, one_line_errors
from .options import number

# InternVL's caption evaluation (eval/caption/evaluate_caption.py): beam 5, 8–30 new tokens
DEFAULT_BEAMS = 5
DEFAULT_TILES = 6
MAX_PROMPT_CHARS = 2000


def check_images(images: list[Path]) -> list[str | None]:
    """Every image decoded once before the model is opened (a bad file is one line, fast);
    what each one's mode converts to (None for RGB)."""
    from PIL import Image

    conversions = []
    for path in images:
        open_image(path)                       # missing, non-image, truncated, bomb, zero size
        with Image.open(path) as img:          # the header again: its mode, for the note
            conversions.append(describe_conversion(img.mode))
    return conversions


@one_line_errors
def caption(  # noqa: PLR0913
    images: Annotated[list[Path], typer.Argument(
        help="Image files (JPEG, PNG, WebP, …); grayscale, CMYK and alpha images are converted "
             "to RGB (a note says how).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "ort",
    precision: Annotated[str, typer.Option(
        help="fp32, fp16, int8, int8-cpu or int4: the export made into the cache for a model "
             "(an --artifact has its own).")] = "fp32",
    beam_size: Annotated[int, number("--beam-size", "Beams (1 = greedy). Default 5, as "
                                                    "InternVL's caption evaluation.", 1, 8)
                         ] = DEFAULT_BEAMS,
    max_tiles: Annotated[Optional[int], number(
        "--max-tiles", "Most 448-px tiles an image is cut into (+ a thumbnail when more than "
                       f"one); default {DEFAULT_TILES}, or the model's limit if lower.", 1, 12)
    ] = None,
    max_new_tokens: Annotated[int, number("--max-new-tokens", "Most tokens of a caption "
                                                              "(InternVL's evaluation: 30).",
                                          1, 64)] = 30,
    prompt: Annotated[Optional[str], typer.Option(
        help="The question asked with the image (default InternVL's caption prompt: \"Provide "
             "a one-sentence caption for the provided image.\").")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per image: image, caption, tokens, tiles, "
                       "timings.")] = False,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the captions here (default: standard output), "
                               "atomically. An existing file is kept unless --force.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output.")] = False,
    seed: Seed = 0,
):
    """Caption images with InternVL on any backend: the toolkit's trained small captioner by
    default (one caption per image; with several images, "image<TAB>caption" lines)."""
    if precision != "bf16":   # torch only; the rest as the export takes them (int4 too)
        check_family_precision("internvl", precision)
    question = CAPTION_PROMPT if prompt is None else prompt.strip()
    if not question:
        raise ToolkitError("--prompt is empty; leave it out for InternVL's caption prompt")
    if len(question) > MAX_PROMPT_CHARS:
        raise ToolkitError(f"--prompt is {len(question)} characters; at most "
                           f"{MAX_PROMPT_CHARS}")
    if output is not None and output.exists() and not force:
        raise ToolkitError(f"{output} exists; give another --output or --force to overwrite it")
    conversions = check_images(images)
    pipe = registry.get("internvl").open_pipeline(
        artifact=artifact, checkpoint=checkpoint, preset=preset, backend=backend,
        precision=precision, seed=seed)
    if max_tiles is None:
        max_tiles = min(DEFAULT_TILES, pipe.max_tiles)
    try:
        caps = [pipe.caption_one(path, beam_size=beam_size, max_tiles=max_tiles,
                                 max_new_tokens=max_new_tokens,
                                 min_new_tokens=min(8, max_new_tokens), question=question)
                for path in images]
    finally:
        pipe.close()
    rows = []
    for path, c in zip(images, caps):
        if as_json:
            steps = c.step_ms
            rows.append(json.dumps({
                "image": str(path), "caption": c.text, "tokens": len(c.tokens),
                "tiles": c.tiles,
                "timings": {"vision_ms": round(c.vision_ms, 2),
                            "prefill_ms": round(c.prefill_ms, 2),
                            "ms_per_token": round(sum(steps) / len(steps), 3) if steps else None,
                            "decode_ms": round(c.prefill_ms + sum(steps), 2)}},
                ensure_ascii=False))
        else:
            rows.append(c.text if len(images) == 1 else f"{path}\t{c.text}")
    for path, how in zip(images, conversions):
        if how:
            note(f"{path}: {how}")
    if output is not None:
        atomic_write_bytes(output, ("\n".join(rows) + "\n").encode("utf-8"))
        note(f"wrote {len(rows)} caption(s) to {output}")
    else:
        sys.stdout.write("".join(row + "\n" for row in rows))   # (rich would expand tabs)
        sys.stdout.flush()
    if pipe.random_init:
        note("random weights (preset " + str(pipe.source.get("preset")) + "): the caption "
             "describes nothing; the trained captioner (toolkit/assets/internvl/captioner) or "
             "--checkpoint DIR gives real captions")
