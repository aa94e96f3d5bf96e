"""Caption quality as the COCO caption evaluation computes it: ``pycocoevalcap``.

CIDEr(-D), BLEU-1..4, METEOR 1.5 and ROUGE-L over the references, after the evaluation's own
PTB tokenizer (Stanford CoreNLP 3.4.1) — the figures InternVL's ``evaluate_caption`` script and
the COCO leaderboard report, so a figure here can be read beside published ones. The tokenizer
and METEOR are Java programs shipped inside the package: without a ``java`` on PATH the scoring
is a one-line error saying what to install. SPICE downloads Stanford CoreNLP's models on first
use and stays off (no fetching at run time).

A caption split is read from a folder laid out like ``../shared/data/captions`` or a COCO
Karpathy folder: ``annotations/<name>_karpathy_<split>.json`` (a list of ``{"image": path,
"caption": [...]}``) and, beside it, ``<name>_karpathy_<split>_gt.json`` (COCO ground truth:
``images`` with ``id``/``file_name``, ``annotations`` with ``image_id``/``caption``), the image
paths relative to the folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from ..core.errors import MissingDependency, ToolkitError

METRICS = ("CIDEr", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")


@dataclass(frozen=True)
class CaptionItem:
    image_id: int
    image: Path                   # the image file
    references: tuple[str, ...]   # its reference captions


def _missing(what: str) -> MissingDependency:
    return MissingDependency(f"scoring captions needs {what}; pip install 'toolkit[export]'")


def _need_java() -> None:
    if shutil.which("java") is None:
        raise MissingDependency("scoring captions needs a Java runtime (pycocoevalcap's PTB "
                                "tokenizer and METEOR are Java programs): install one, e.g. "
                                "apt install openjdk-17-jre-headless")


def split_files(data: Path, split: str) -> tuple[Path, Path]:
    """``annotations/*_karpathy_<split>.json`` and its ``_gt.json`` in ``data``."""
    ann = Path(data) / "annotations"
    if not ann.is_dir():
        raise ToolkitError(f"{data} has no annotations/ folder: give --data a folder laid out "
                           "like ../shared/data/captions (annotations/*_karpathy_<split>.json)")
    found = sorted(p for p in ann.glob(f"*_karpathy_{split}.json"))
    if len(found) != 1:
        raise ToolkitError(f"{ann} holds {len(found)} files named *_karpathy_{split}.json; "
                           "expected exactly one")
    gt = found[0].with_name(found[0].stem + "_gt.json")
    if not gt.is_file():
        raise ToolkitError(f"{gt.name} is missing beside {found[0].name} (COCO ground truth "
                           "for pycocoevalcap)")
    return found[0], gt


def read_split(data: Path, split: str = "test", limit: int | None = None) -> list[CaptionItem]:
    """The split's images with their ids and references, in the order of the Karpathy list."""
    listing, gt_path = split_files(data, split)
    try:
        items = json.loads(listing.read_text(encoding="utf-8"))
        gt = json.loads(gt_path.read_text(encoding="utf-8"))
        ids = {img["file_name"]: int(img["id"]) for img in gt["images"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"{listing.parent}: not a Karpathy caption split ({exc})") from None
    refs: dict[int, list[str]] = {}
    for a in gt.get("annotations", []):
        refs.setdefault(int(a["image_id"]), []).append(str(a["caption"]))
    out = []
    for item in items[:limit] if limit else items:
        name = item.get("image") if isinstance(item, dict) else None
        if name not in ids:
            raise ToolkitError(f"{listing.name}: image {name!r} is not in {gt_path.name}")
        path = (Path(data) / name)
        if not path.is_file():
            raise ToolkitError(f"{path} is listed in {listing.name} but missing")
        image_id = ids[name]
        out.append(CaptionItem(image_id, path, tuple(refs.get(image_id) or item["caption"])))
    return out


def caption_scores(hyps: Mapping[int, str], refs: Mapping[int, Sequence[str]],
                   meteor: bool = True) -> dict[str, float]:
    """pycocoevalcap's corpus figures for ``hyps`` (one caption per image id) against
    ``refs``: CIDEr, BLEU-1..4, METEOR, ROUGE-L (fractions, as the package reports them:
    CIDEr 1.312 is the seed's "131.2")."""
    if not hyps:
        raise ToolkitError("no captions to score")
    missing = [k for k in hyps if k not in refs]
    if missing:
        raise ToolkitError(f"image {missing[0]} has a caption but no references")
    _need_java()
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise _missing("pycocoevalcap") from None
    keys = sorted(hyps)
    tok = PTBTokenizer()
    # the tokenizer joins each list with newlines: a newline inside a caption would shift rows
    gts = tok.tokenize({k: [{"caption": r.replace("\n", " ")} for r in refs[k]] for k in keys})
    res = tok.tokenize({k: [{"caption": (hyps[k] or "").replace("\n", " ")}] for k in keys})
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, b in enumerate(bleu, 1):
        out[f"BLEU-{n}"] = float(b)
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor
        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            _close_meteor(scorer)
    return {k: out[k] for k in METRICS if k in out}


def _close_meteor(scorer) -> None:
    """pycocoevalcap 1.2 closes its Java process only in ``__del__``: close it now."""
    proc = getattr(scorer, "meteor_p", None)
    if proc is None:
        return
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except OSError:
            pass
    proc.kill()
    proc.wait()


def cider_against(hyps: Mapping[int, str], reference: Mapping[int, str]) -> float:
    """CIDEr of ``hyps`` taking another row's captions (PyTorch fp32's) as the only reference:
    1 reference per image, so the figure is how close the two rows' captions are, not
    quality."""
    return caption_scores(hyps, {k: [reference[k]] for k in hyps}, meteor=False)["CIDEr"]
