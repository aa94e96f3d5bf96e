"""int4 — the LLM's decoder step as 4-bit MatMulNBits (the output projection at 8-bit), the
vision graph at its int8-cpu form — on the internvl-tiny preset (+ seeded noise): the export
validates within the plan's INT4_BUDGET on real caption images, the graphs hold what the
manifest says, the runtime pipeline captions from the artifact (torch-free), and a family that
does not offer int4 refuses it in one line before loading anything."""

import json
import os
import subprocess
import sys
import textwrap

import onnx
import pytest
import torch

from support.cli import fails_cleanly, run_toolkit
from toolkit.core.errors import ToolkitError
from toolkit.core.precisions import FAMILY_PRECISIONS, check_family_precision
from toolkit.export.command import ExportOptions, export_model
from toolkit.export.internvl.plan import INT4_BLOCK, INT4_BUDGET, build_plan, caption_images
from toolkit.export.onnx import export_plan
from toolkit.runtime.graphs import open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs


@pytest.fixture(scope="module")
def int4_artifact(internvl_tiny, shared_data, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("internvl-int4") / "internvl-tiny-int4"
    export_plan(build_plan(internvl_tiny), "int4", out)
    torch.set_num_threads(before)
    return out


def _bits(path):
    model = onnx.load(str(path), load_external_data=False)
    return {n.name: next(a.i for a in n.attribute if a.name == "bits")
            for n in model.graph.node if n.op_type == "MatMulNBits"}, model


def test_int4_validates_within_its_budget(int4_artifact):
    manifest = json.loads((int4_artifact / "manifest.json").read_text())
    assert manifest["precision"] == "int4"
    report = manifest["parity"]["graphs"]
    logits = report["decoder"]["logits"]
    assert logits["passed"] and logits["tolerance"]["rel_l2"] == INT4_BUDGET["decoder"]
    # 4-bit weights move the logits measurably (so the graph really is quantized) but stay
    # within the budget; the cache outputs too
    assert 0.02 < logits["rel_l2"] <= INT4_BUDGET["decoder"]
    assert logits["cosine"] >= INT4_BUDGET["cosine"]
    assert all(m["passed"] and m["rel_l2"] <= INT4_BUDGET["decoder"]
               for m in report["decoder"].values())
    assert report["vision"]["image_embeds"]["rel_l2"] < 0.15    # int8-cpu (INT8_BUDGET)


def test_the_decoder_holds_4bit_matmulnbits_and_lm_head_at_8bit(int4_artifact,
                                                                internvl_artifact):
    manifest = json.loads((int4_artifact / "manifest.json").read_text())
    dec = manifest["graphs"]["decoder"]
    bits, model = _bits(int4_artifact / dec["file"])
    assert not [n for n in model.graph.node if n.op_type == "MatMul"
                and any(i.name == n.input[1] for i in model.graph.initializer)]
    lm = [n for n in bits if "lm_head" in n]
    assert len(lm) == 1 and bits[lm[0]] == 8
    four = [n for n, b in bits.items() if b == 4]
    assert len(four) == 4 * 7 == dec["int4_nodes"]       # 4 layers × q, k, v, o, gate, up, down
    blocks = {next(a.i for a in n.attribute if a.name == "block_size")
              for n in model.graph.node if n.op_type == "MatMulNBits"}
    assert blocks == {INT4_BLOCK}
    assert dec["settings"]["int4_scheme"] == "nbits" and dec["held_precision"] == "int8"
    vision = manifest["graphs"]["vision"]
    v_ops = {n.op_type for n in onnx.load(str(int4_artifact / vision["file"]),
                                          load_external_data=False).graph.node}
    assert "MatMulInteger" in v_ops and "MatMulNBits" not in v_ops   # vision: int8-cpu
    assert vision["int4_scheme"] == "int8-cpu"
    # a quarter of the fp32 bytes, plus the block scales and the 8-bit output projection
    fp32 = json.loads((internvl_artifact / "manifest.json").read_text())["graphs"]["decoder"]
    assert dec["bytes"] < 0.3 * fp32["bytes"]


def test_the_int4_artifact_captions_close_to_fp32(int4_artifact, internvl_artifact, shared_data):
    images = caption_images("val")[:8]
    int4 = from_graphs(open_artifact(int4_artifact, "internvl", "ort", threads=1))
    fp32 = from_graphs(open_artifact(internvl_artifact, "internvl", "ort", threads=1))
    got = int4.caption(images)
    want = fp32.caption(images)
    assert all(8 <= len(c.tokens) <= 30 and c.text.strip() and c.tiles == 1 for c in got)
    assert len({tuple(c.tokens) for c in got}) > 1             # the images are told apart
    # the noise-perturbed tiny preset's logits are near ties (its captions repeat tokens), so
    # 4-bit weights flip many argmaxes: 3 of 8 captions identical to fp32 here
    assert sum(a.tokens == b.tokens for a, b in zip(got, want)) >= 2


BLOCKER = textwrap.dedent("""
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked", name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


def test_the_int4_artifact_runs_without_torch(int4_artifact, shared_data, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    image = caption_images("val")[0]
    code = textwrap.dedent(f"""
        from toolkit.runtime.graphs import open_artifact
        from toolkit.runtime.internvl.pipeline import from_graphs
        pipe = from_graphs(open_artifact({str(int4_artifact)!r}, "internvl", "ort", threads=1))
        print(pipe.caption([{str(image)!r}])[0].tokens)
        import sys
        assert "torch" not in sys.modules and "transformers" not in sys.modules
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    pipe = from_graphs(open_artifact(int4_artifact, "internvl", "ort", threads=1))
    assert r.stdout.strip() == str(pipe.caption([image])[0].tokens)


class _Family:
    name = "whisper"

    def load_model(self, *a):   # never reached: the precision is refused first
        raise AssertionError("the model was loaded before the precision was checked")


def test_a_family_without_int4_refuses_it_in_one_line(tmp_path):
    assert FAMILY_PRECISIONS["int4"] == ("internvl",)
    with pytest.raises(ToolkitError) as e:
        export_model(_Family(), ExportOptions(preset="tiny", precision="int4",
                                              out=tmp_path / "x"))
    msg = str(e.value)
    assert "\n" not in msg and "whisper does not offer --precision int4" in msg
    assert "internvl" in msg
    assert check_family_precision("internvl", "int4") == "int4"
    with pytest.raises(ToolkitError, match="unknown precision 'int3'"):
        check_family_precision("internvl", "int3")
    with pytest.raises(ToolkitError, match="--trt cannot build int4"):
        ExportOptions(precision="int4", trt=True).check()


def test_toolkit_export_int4_on_the_trained_captioner(tmp_path, shared_data):
    """`toolkit export internvl --int4` (the default model: the captioner trained here) writes
    a validated int4 artifact that `toolkit caption` reads; the flag is refused in one line by a
    family without int4 and beside another precision flag."""
    out = tmp_path / "cap-int4"
    r = run_toolkit("export", "internvl", "--int4", "--out", out,
                    env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int4" and manifest["random_init"] is False
    dec = manifest["graphs"]["decoder"]
    assert dec["int4_nodes"] >= 1 and dec["int4_nodes"] < dec["weight_layers"]
    assert all(m["passed"] for g in manifest["parity"]["graphs"].values() for m in g.values())
    image = shared_data / "captions" / "test" / "SHAPES_test_000000004313.jpg"
    r = run_toolkit("caption", image, "--artifact", out, "--json", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert 8 <= got["tokens"] <= 30 and "background" in got["caption"]
    fails_cleanly("export", "whisper", "--int4", "--out", tmp_path / "w",
                  contains="whisper does not offer --precision int4; only internvl does")
    fails_cleanly("export", "internvl", "--int4", "--int8", "--out", tmp_path / "w",
                  contains="choose one of --int8 and --int4")
    assert not (tmp_path / "w").exists()


def test_int4_over_its_budget_moves_the_most_sensitive_layers_to_8bit(tmp_path):
    """The trained captioner's all-4-bit decoder measures ~0.06 rel L2; with a budget of 0.03
    the exporter must move some (not all) 4-bit layers to 8-bit blocks until the error holds,
    ship exactly that graph, and say which layers and why in the manifest."""
    import dataclasses

    from toolkit.models.internvl.default import captioner_dir
    from toolkit.models.internvl.loading import load_model

    loaded = load_model(checkpoint=str(captioner_dir()))
    plan = build_plan(loaded)
    plan.graphs[1] = dataclasses.replace(plan.graphs[1], int4_budget=0.03)
    assert plan.graphs[1].name == "decoder"
    out = tmp_path / "cap-int4-mixed"
    export_plan(plan, "int4", out, release=loaded.release)
    manifest = json.loads((out / "manifest.json").read_text())
    dec = manifest["graphs"]["decoder"]
    moved = dec["int8_by_sensitivity"]
    assert dec["int4_budget_rel_l2"] == 0.03 and 0 < dec["int4_error_rel_l2"] <= 0.03
    assert 1 <= len(moved) < dec["weight_layers"] - 1 and dec["float_layers"] == []
    bits, _ = _bits(out / "decoder.onnx")
    # the graph holds what the manifest says: lm_head and the moved layers at 8-bit, the rest 4
    assert sorted(n for n, b in bits.items() if b == 8) == sorted(dec["int8_nodes"])
    assert set(moved) < set(dec["int8_nodes"]) and dec["int4_nodes"] == len(bits) - len(
        dec["int8_nodes"]) > 0
    # the moved ones were the most sensitive of the 4-bit layers measured
    assert min(moved.values()) > 0
    assert manifest["parity"]["graphs"]["decoder"]["logits"]["passed"]
    assert not [p for p in out.iterdir() if "all8bit" in p.name or "candidate" in p.name]
    pipe = from_graphs(open_artifact(out, "internvl", "ort", threads=1))
    (got,) = pipe.caption(caption_images("test")[:1])
    assert 8 <= len(got.tokens) <= 30
