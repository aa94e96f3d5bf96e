"""Marian's own command: ``toolkit translate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import registry
from ..core.errors import ToolkitError
from ..core.files import check_input_file
from ..models.marian.package import DEFAULT_PAIR, pair_checkpoint
from .base import Artifact, Backend, Checkpoint, Preset, Seed, note, one_line_errors, out
from .options import number

MAX_INPUT_BYTES = 64 << 20   # --input: 64 MiB of text (about 400 000 sentences)


def read_lines(path: Path) -> list[str]:
    """The lines of ``--input`` (``-``: standard input), as UTF-8 text."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        where = "standard input"
    else:
        check_input_file(path, "text file")
        if path.stat().st_size > MAX_INPUT_BYTES:
            raise ToolkitError(f"{path} is {path.stat().st_size >> 20} MiB; --input takes at "
                               f"most {MAX_INPUT_BYTES >> 20} MiB — split the file")
        data, where = path.read_bytes(), str(path)
    if len(data) > MAX_INPUT_BYTES:
        raise ToolkitError(f"{where} holds over {MAX_INPUT_BYTES >> 20} MiB; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ToolkitError(f"{where} is not UTF-8 text (byte {exc.start}); convert it, e.g. "
                           "iconv -f latin1 -t utf-8") from None
    return text.splitlines()


def _model(source: str | None, target: str | None, artifact, checkpoint, preset) -> dict:
    """Where the model comes from: ``--from/--to`` pick a packaged pair when no model is given;
    with one, they must name the pair it has (checked once it is open)."""
    if artifact or checkpoint or preset:
        return dict(artifact=artifact, checkpoint=checkpoint, preset=preset)
    if source is None and target is None:
        return {}
    chosen = pair_checkpoint(source, target)
    return {} if chosen == pair_checkpoint(*DEFAULT_PAIR) else dict(checkpoint=chosen)


def _check_pair(pipe, source: str | None, target: str | None) -> None:
    have = tuple(pipe.pair)
    if (source and source.lower() != have[0]) or (target and target.lower() != have[1]):
        raise ToolkitError(f"this model translates {have[0]}→{have[1]}, not "
                           f"{source or have[0]}→{target or have[1]}; give a model for that "
                           "pair or leave out --from/--to")


@one_line_errors
def translate(  # noqa: PLR0913
    text: Annotated[Optional[list[str]], typer.Argument(
        help="Text to translate (each argument is one sentence); or use --input.")] = None,
    input_file: Annotated[Optional[Path], typer.Option(
        "--input", "-i", help="A UTF-8 text file, one sentence per line (- : standard "
                              "input); empty lines stay empty.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the translations here, one per line (default: "
                               "standard output). An existing file is kept unless --force.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --output.")] = False,
    source: Annotated[Optional[str], typer.Option(
        "--from", help="Source language (the packaged models: en, pt).")] = None,
    target: Annotated[Optional[str], typer.Option(
        "--to", help="Target language (the packaged models: pt, en).")] = None,
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "ort",
    beam_size: Annotated[int, number("--beam-size", "Beams (1 = greedy, as Firefox runs its "
                                                    "distilled students).", 1, 16)] = 1,
    batch_size: Annotated[int, number("--batch-size", "Sentences decoded together (sorted by "
                                                      "length).", 1, 1024)] = 32,
    shortlist: Annotated[Optional[bool], typer.Option(
        "--shortlist/--no-shortlist", help="Decode over the target words the lexical "
        "shortlist allows for each batch's source words (default when the model ships one, "
        "as Firefox runs it: about 2× faster at batch 1) or over the whole vocabulary."
    )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sentence: "
                                                         "source, translation, tokens.")] = False,
    seed: Seed = 0,
):
    """Translate text or a file (one sentence per line) with a Marian model on any backend:
    en→pt by default (Firefox Translations' trained tiny student)."""
    if text and input_file is not None:
        raise ToolkitError("give the text as arguments or --input FILE, not both")
    if not text and input_file is None:
        raise ToolkitError("nothing to translate: give a sentence (toolkit translate "
                           "\"Hello\") or --input FILE")
    if output is not None and output.exists() and not force:
        raise ToolkitError(f"{output} exists; give another --output or --force to overwrite it")
    lines = read_lines(input_file) if input_file is not None else list(text)
    where = str(input_file) if input_file is not None else None
    keep = [i for i, line in enumerate(lines) if line.strip() or where is None]
    if not keep:
        raise ToolkitError(f"{where} holds no text to translate")
    pipe = registry.get("marian").open_pipeline(
        backend=backend, seed=seed, **_model(source, target, artifact, checkpoint, preset))
    _check_pair(pipe, source, target)
    if shortlist and pipe.shortlist is None:
        raise ToolkitError("this model has no lexical shortlist (only Firefox's Bergamot models "
                           "ship one, and an artifact exported from them); leave out "
                           "--shortlist")
    if shortlist is not None:
        pipe.use_shortlist = shortlist
    names = [f"{where}:{i + 1}" if where else f"text {i + 1}" for i in keep]
    res = pipe.translate([lines[i] for i in keep], beam_size=beam_size,
                         batch_size=batch_size, names=names)
    done = dict(zip(keep, res.translations))
    rows = []
    for i, line in enumerate(lines):
        t = done.get(i)
        rows.append(json.dumps({"source": line, "translation": t.text if t else "",
                                "tokens": len(t.tokens) if t else 0}, ensure_ascii=False)
                    if as_json else (t.text if t else ""))
    if output is not None:
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
        tmp.replace(output)
        note(f"wrote {len(keep)} translations to {output}")
    else:
        for row in rows:
            out.print(row, markup=False, highlight=False, soft_wrap=True)
    if pipe.random_init:
        note("random-initialised weights (preset): the output is not a translation; use the "
             "default model or --checkpoint for a trained one")
