"""``--feature-cache``: each training clip's log-mel on disk, keyed by the audio's SHA-256 and
the mel settings, written atomically, read back without unpickling, recomputed when damaged."""

import hashlib
import shutil

import numpy as np
import pytest

import toolkit.train.whisper_data as wd
from toolkit.models.whisper.data import Utterance, load_labelled_folder
from toolkit.models.whisper.loading import load_model
from toolkit.train.whisper_data import Clips, FeatureCache, Sample, Skipped, index_clips


@pytest.fixture(scope="module")
def three(shared_data, tmp_path_factory):
    lj = shared_data / "ljspeech-mini"
    d = tmp_path_factory.mktemp("lj3")
    (d / "wavs").mkdir()
    rows = (lj / "metadata.csv").read_text().splitlines()[:3]
    for r in rows:
        shutil.copy(lj / "wavs" / f"{r.split('|')[0]}.wav", d / "wavs")
    (d / "metadata.csv").write_text("\n".join(rows) + "\n")
    broken = d / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    return load_labelled_folder(d) + [Utterance(broken, "x")]


def _boom(*_a, **_k):
    raise AssertionError("decoded although the cache holds the clip")


def test_feature_cache_round_trip_keys_and_damage(three, tmp_path, monkeypatch):
    tok = load_model(preset="tiny").tokenizer
    prompt = tok.sot_sequence("en", "transcribe")
    index = index_clips(three)
    cache = FeatureCache(tmp_path / "fc", 80)
    plan = cache.plan(len(index))           # said before anything is written
    assert "4 clips × 0.96 MB (float32 80 × 3000) = 0.00 GB" in plan and "0 clip(s)" in plan
    assert cache.bytes_per_clip == 8 + 80 * 3000 * 4 + 128
    cached = Clips(index, tok, prompt, 80, 448, augment=True, seed=5, cache=cache)
    plain = Clips(index, tok, prompt, 80, 448, augment=True, seed=5)
    first = [cached[(0, i)] for i in range(4)]
    want = [plain[(0, i)] for i in range(4)]
    assert isinstance(first[3], Skipped) and isinstance(want[3], Skipped)
    for a, b in zip(first[:3], want[:3]):
        assert isinstance(a, Sample) and np.array_equal(a.feats, b.feats)
        assert a.seconds == b.seconds and a.tokens == b.tokens
    # one file per readable clip, named by the SHA-256 of its bytes, no temporary left
    files = sorted(p.name for p in cache.dir.rglob("*") if p.is_file())
    digests = sorted(hashlib.sha256(open(u.path, "rb").read()).hexdigest() + ".npy"
                     for u in three[:3])
    assert files == digests and "mel80-sr16000-fft400-hop160-frames3000-v1" in str(cache.dir)
    assert "3 clip(s) cached already" in cache.plan(len(index))
    # later epochs read the cache: no decoding, no log-mel; the epoch's own SpecAugment masks
    want1 = [plain[(1, i)] for i in range(3)]
    assert not np.array_equal(want1[0].feats, want[0].feats)       # other masks
    monkeypatch.setattr(wd, "load_audio", _boom)
    monkeypatch.setattr(wd, "log_mel", _boom)
    for i in range(3):
        a = cached[(1, i)]
        assert np.array_equal(a.feats, want1[i].feats) and a.seconds == want1[i].seconds
    monkeypatch.undo()
    # damaged entries are recomputed and replaced, never unpickled: a pickled object array, a
    # file cut short, a record of another shape
    target = cache.file(cache.key(index.paths[0]))
    good = target.read_bytes()
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([{"run": "code"}], dtype=object), allow_pickle=True)
    other = np.zeros((), np.dtype([("samples", "<i8"), ("feats", "<f4", (128, 3000))]))
    np.save(tmp_path / "other.npy", other)
    for bad in (evil.read_bytes(), good[: len(good) // 2], (tmp_path / "other.npy").read_bytes()):
        target.write_bytes(bad)
        assert cache.get(cache.key(index.paths[0])) is None
        assert np.array_equal(cached[(0, 0)].feats, want[0].feats)
        assert target.read_bytes() == good
    # another model's mel bins: another folder, nothing shared
    assert FeatureCache(tmp_path / "fc", 128).dir != cache.dir
    assert FeatureCache(tmp_path / "fc", 128).cached() == 0

