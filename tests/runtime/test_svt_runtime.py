"""The SVT embedding pipeline over Sessions (tiny preset): torch and an ort artifact give the
same clip embeddings, slow-fast views as the paper describes, batches equal single clips."""

import numpy as np
import pytest

from support.zoo import export, tiny
from toolkit import registry
from toolkit.core.errors import ToolkitError
from toolkit.models.svt.video import decode_frames

SVT = registry.get("svt")


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    out = tmp_path_factory.mktemp("svt") / "fp32"
    export(tiny("svt"), "fp32", out)
    torch_pipe = SVT.open_pipeline(loaded=tiny("svt"), backend="torch")
    ort_pipe = SVT.open_pipeline(artifact=out, backend="ort")
    yield torch_pipe, ort_pipe
    torch_pipe.close()
    ort_pipe.close()


def test_torch_and_ort_embed_the_same(pipes, shared_data):
    torch_pipe, ort_pipe = pipes
    demo = shared_data / "video" / "demo.mp4"
    a = torch_pipe.embed(demo, n_frames=4, size=48)
    b = ort_pipe.embed(demo, n_frames=4, size=48)
    assert a["views"] == b["views"] == [[4, 48, 48]] and a["dim"] == 64
    np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-4)
    other = ort_pipe.embed(demo, n_frames=2, size=32)["embedding"]
    assert np.abs(other - b["embedding"]).max() > 1e-3    # the comparison above can fail


def test_slow_fast_views_and_batching(pipes, shared_data):
    _, ort_pipe = pipes
    frames = decode_frames(shared_data / "video" / "demo.mp4")
    views = ort_pipe.views(frames, 4, 64, slow_fast=True, name="demo")
    assert [list(v.shape) for v in views] == [[3, 2, 64, 64], [3, 8, 32, 32]]
    one = ort_pipe.views(frames, 4, 48, slow_fast=False, name="demo")[0]
    single = ort_pipe.embed_clip(one)
    batch = ort_pipe.embed_clip(np.stack([one, one]))
    assert batch.shape == (2, 64)
    np.testing.assert_allclose(batch[0], single, atol=1e-5)
    with pytest.raises(ToolkitError, match="--slow-fast needs"):
        ort_pipe.views(frames[:5], 4, 48, slow_fast=True, name="short")
