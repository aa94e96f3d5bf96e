"""Translation over the shared encoder–decoder loop: PyTorch and onnxruntime give the same
tokens (greedy and beam), batching keeps the order and the outputs, bad input is one line."""

import pytest

from toolkit import registry
from toolkit.core.errors import ToolkitError

marian = registry.get("marian")


@pytest.fixture(scope="module")
def pipes(marian_artifact):
    return (marian.open_pipeline(backend="torch"),
            marian.open_pipeline(artifact=marian_artifact))


@pytest.mark.parametrize("beam", [1, 4])
def test_torch_and_ort_give_the_same_tokens(pipes, en_pt_pairs, beam):
    src = [s for s, _ in en_pt_pairs[:24]]
    torch_pipe, ort_pipe = pipes
    a = torch_pipe.translate(src, beam_size=beam)
    b = ort_pipe.translate(src, beam_size=beam)
    assert [t.tokens for t in a.translations] == [t.tokens for t in b.translations]
    assert sum("arquivo" in t.text for t in b.translations) >= 3


def test_batches_are_sorted_but_the_order_is_kept(pipes, en_pt_pairs):
    _, pipe = pipes
    src = [s for s, _ in en_pt_pairs[30:50]]
    together = pipe.translate(src, batch_size=32)
    alone = [pipe.translate([s]).translations[0].text for s in src[:6]]
    assert [t.text for t in together.translations][:6] == alone
    small = pipe.translate(src, batch_size=3)
    assert small.batches == 7 and together.batches == 1


def test_the_reference_search_in_pytorch_agrees(pipes, en_pt_pairs):
    """The models layer's own greedy search (search.py) and the shared Searcher agree."""
    from toolkit.models.marian.loading import load_model

    src = [s for s, _ in en_pt_pairs[:12]]
    ref = load_model().translate(src)
    got = [t.text for t in pipes[1].translate(src).translations]
    assert sum(a == b for a, b in zip(ref, got)) >= 11


@pytest.mark.parametrize("text,message", [
    ("   ", "is empty"),
    ("Привет мир, как дела сегодня", "mostly characters"),
    ("word " * 300, "at most 256 pieces"),
])
def test_bad_input_is_one_line(pipes, text, message):
    with pytest.raises(ToolkitError, match=message):
        pipes[1].translate([text])


def test_curly_quotes_are_read_as_ascii(pipes):
    _, pipe = pipes
    a = pipe.translate(["Click “Save” to keep it’s changes"]).translations[0]
    b = pipe.translate(['Click "Save" to keep it\'s changes']).translations[0]
    assert a.tokens == b.tokens and 1 not in a.tokens     # no <unk>
