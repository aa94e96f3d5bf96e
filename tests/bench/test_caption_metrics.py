"""pycocoevalcap scoring of captions and the Karpathy split reader (bench/captions.py)."""

import json
import shutil

import pytest

from toolkit.bench import captions
from toolkit.core.errors import MissingDependency, ToolkitError

DATA = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared/data/captions"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/captions is missing")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime")


@needs_data
def test_read_split_pairs_images_with_their_coco_references():
    items = captions.read_split(DATA, "test", limit=5)
    assert len(items) == 5 and all(i.image.is_file() for i in items)
    gt = json.loads((DATA / "annotations/shapes_karpathy_test_gt.json").read_text())
    first = [a["caption"] for a in gt["annotations"] if a["image_id"] == items[0].image_id]
    assert list(items[0].references) == first and len(first) == 5


@needs_data
@needs_java
def test_a_reference_scores_far_above_a_fixed_wrong_caption():
    items = captions.read_split(DATA, "test", limit=40)
    held_out = {i.image_id: i.references[0] for i in items}
    rest = {i.image_id: i.references[1:] for i in items}
    good = captions.caption_scores(held_out, rest)
    bad = captions.caption_scores({k: "a cat on a sofa" for k in held_out}, rest)
    assert set(good) == set(captions.METRICS)
    assert good["CIDEr"] > 1.0 > 0.2 > bad["CIDEr"]
    for name in ("BLEU-4", "METEOR", "ROUGE-L"):
        assert good[name] > bad[name] + 0.1
    assert 0 < good["BLEU-4"] <= good["BLEU-1"] <= 1
    same = captions.cider_against(held_out, held_out)
    assert same > captions.cider_against({k: "a cat" for k in held_out}, held_out) + 5


def test_without_java_the_error_names_what_to_install(monkeypatch):
    monkeypatch.setattr(captions.shutil, "which", lambda name: None)
    with pytest.raises(MissingDependency, match="Java runtime.*openjdk"):
        captions.caption_scores({1: "a red circle"}, {1: ["a red circle"]})


def test_a_folder_without_the_split_is_refused(tmp_path):
    with pytest.raises(ToolkitError, match="no annotations/ folder"):
        captions.read_split(tmp_path, "test")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/x_karpathy_test.json").write_text("[]")
    with pytest.raises(ToolkitError, match="x_karpathy_test_gt.json is missing"):
        captions.read_split(tmp_path, "test")
