"""Captioning over the shared cached-decoder search: PyTorch (the plan's modules) and
onnxruntime (the artifact) give the same tokens, greedy and beam 5, equal to transformers'
``generate`` on the same weights (``LoadedInternVL.caption_ids``); the artifact path runs with
torch and transformers unimportable; bad input is one line."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from toolkit.core.errors import ToolkitError
from toolkit.export.internvl.plan import build_plan, caption_images
from toolkit.runtime.from_model import open_model
from toolkit.runtime.graphs import open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs


@pytest.fixture(scope="module")
def pipes(internvl_tiny, internvl_artifact):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield (from_graphs(open_model(internvl_tiny, build_plan, "torch", threads=1)),
           from_graphs(open_artifact(internvl_artifact, "internvl", "ort", threads=1)))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images(shared_data):
    return caption_images("val")[:3]


@pytest.mark.parametrize("beam", [1, 5])
def test_torch_ort_and_generate_give_the_same_tokens(pipes, images, internvl_tiny, beam):
    torch_pipe, ort_pipe = pipes
    a = [c.tokens for c in torch_pipe.caption(images, beam_size=beam)]
    b = [c.tokens for c in ort_pipe.caption(images, beam_size=beam)]
    want = internvl_tiny.caption_ids(images, beam_size=beam)
    assert a == b == want
    assert all(8 <= len(t) <= 30 for t in a)
    assert len({tuple(t) for t in a}) == len(a)        # the images give different captions


def test_captions_end_at_im_end_but_not_before_8_tokens(internvl_tiny, images, shared_data):
    """With the end token's output row scaled up, greedy captions end early — at 8 tokens,
    InternVL's minimum (``min_new_tokens``) — exactly where ``generate`` ends them."""
    import copy

    loaded = copy.deepcopy(internvl_tiny)
    with torch.no_grad():
        loaded.model.language_model.lm_head.weight[loaded.eos_id] *= 8
    pipe = from_graphs(open_model(loaded, build_plan, "torch", threads=1))
    more = caption_images("val")[:6]
    got = [c.tokens for c in pipe.caption(more)]
    assert got == loaded.caption_ids(more)
    assert sorted(len(t) for t in got)[:2] == [8, 8] and max(len(t) for t in got) == 30


def test_beam_search_is_not_greedy(pipes, images):
    _, pipe = pipes
    greedy = [c.tokens for c in pipe.caption(images)]
    beam = [c.tokens for c in pipe.caption(images, beam_size=5)]
    assert greedy != beam


def test_a_caption_reports_its_tiles_and_timings(pipes, images, internvl_tiny):
    from PIL import Image

    _, pipe = pipes
    wide = Image.open(images[0]).convert("RGB").resize((896, 448))
    c = pipe.caption([wide], max_tiles=6)[0]
    assert c.tiles == 3 and c.vision_ms > 0 and c.prefill_ms > 0
    assert len(c.step_ms) == len(c.tokens) - 1 or len(c.step_ms) == len(c.tokens)
    assert c.text == internvl_tiny.tokenizer.decode(c.tokens)
    assert c.tokens == internvl_tiny.caption_ids([wide], max_tiles=6)[0]


@pytest.mark.parametrize("call,message", [
    (lambda p, img: p.caption([img], max_tiles=40), "at most 6"),
    (lambda p, img: p.caption([img], beam_size=20), "at most 8"),
    (lambda p, img: p.caption([img.parent / "missing.jpg"]), "does not exist"),
    (lambda p, img: p.caption([]), "nothing to caption"),
])
def test_bad_input_is_one_line(pipes, images, call, message):
    with pytest.raises(ToolkitError, match=message):
        call(pipes[1], images[0])


BLOCKER = textwrap.dedent("""
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked", name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


def test_the_artifact_captions_without_torch(pipes, images, internvl_artifact, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    code = textwrap.dedent(f"""
        from toolkit.runtime.graphs import open_artifact
        from toolkit.runtime.internvl.pipeline import from_graphs
        pipe = from_graphs(open_artifact({str(internvl_artifact)!r}, "internvl", "ort", threads=1))
        print(pipe.caption([{str(images[0])!r}], beam_size=5)[0].tokens)
        import sys
        assert "torch" not in sys.modules and "transformers" not in sys.modules
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(pipes[1].caption([images[0]], beam_size=5)[0].tokens)
