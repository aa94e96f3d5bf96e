"""Translation over the shared encoder–decoder loop: PyTorch and onnxruntime give the same
tokens (greedy and beam, with and without the lexical shortlist), batching keeps the order and
the outputs, bad input is one line."""

import pytest

from toolkit import registry
from toolkit.core.errors import ToolkitError

marian = registry.get("marian")


@pytest.fixture(scope="module")
def pipes(marian_artifact):
    return (marian.open_pipeline(backend="torch"),
            marian.open_pipeline(artifact=marian_artifact))


@pytest.mark.parametrize("beam,shortlist", [(1, True), (4, True), (1, False), (4, False)])
def test_torch_and_ort_give_the_same_tokens(pipes, en_pt_pairs, beam, shortlist):
    src = [s for s, _ in en_pt_pairs[:24]]
    torch_pipe, ort_pipe = pipes
    for p in pipes:
        p.use_shortlist = shortlist
    try:
        a = torch_pipe.translate(src, beam_size=beam)
        b = ort_pipe.translate(src, beam_size=beam)
    finally:
        for p in pipes:
            p.use_shortlist = True
    assert [t.tokens for t in a.translations] == [t.tokens for t in b.translations]
    assert sum("arquivo" in t.text for t in b.translations) >= 3


def test_the_shortlist_restricts_the_output_and_keeps_the_translations(pipes, en_pt_pairs):
    """Each batch decodes over the target ids its source pieces allow (Marian's rule: the 50
    most frequent, each source piece's list, padded to a multiple of 8)."""
    _, pipe = pipes
    assert pipe.shortlist is not None and pipe.use_shortlist
    src = [s for s, _ in en_pt_pairs[:24]]
    short = pipe.translate(src, batch_size=8).translations
    for at in range(0, 24, 8):   # length-sorted batches: check each sentence on its own
        for s, t in zip(src[at:at + 8], short[at:at + 8]):
            allowed = set(pipe.shortlist.allowed(pipe.encode_text(s), pipe.vocab_size).tolist())
            alone = pipe.translate([s]).translations[0]
            assert set(alone.tokens) <= allowed, s
    pipe.use_shortlist = False
    try:
        full = pipe.translate(src, batch_size=8).translations
    finally:
        pipe.use_shortlist = True
    same = sum(a.text == b.text for a, b in zip(short, full))
    assert same >= 18, same      # measured: 57 of the first 64 identical


def test_batches_are_sorted_but_the_order_is_kept(pipes, en_pt_pairs):
    _, pipe = pipes
    src = [s for s, _ in en_pt_pairs[30:50]]
    together = pipe.translate(src, batch_size=32)
    alone = [pipe.translate([s]).translations[0].text for s in src[:6]]
    assert [t.text for t in together.translations][:6] == alone
    small = pipe.translate(src, batch_size=3)
    assert small.batches == 7 and together.batches == 1


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
