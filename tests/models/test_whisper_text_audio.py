"""Tokenizer, audio decoding and log-mel features."""

import numpy as np
import pytest
import soundfile as sf

from toolkit.core.errors import ToolkitError
from toolkit.models.whisper.audio import (
    N_FRAMES,
    check_features,
    features_for,
    load_audio,
    log_mel,
    windows,
)
from toolkit.models.whisper.tokenizer import builtin_tokenizer


@pytest.mark.parametrize("vocab,langs,eot,notimestamps", [(51864, 99, 50256, 50362),
                                                           (51865, 99, 50257, 50363),
                                                           (51866, 100, 50257, 50364)])
def test_builtin_tokenizer_matches_whisper_vocabularies(vocab, langs, eot, notimestamps):
    tok = builtin_tokenizer(vocab)
    assert tok.vocab_size == vocab and tok.num_languages == langs
    assert tok.eot == eot and tok.sot == eot + 1 and tok.no_timestamps == notimestamps
    text = "And so my fellow Americans, ask not what your country can do for you."
    assert tok.decode(tok.encode(text)) == text
    if tok.multilingual:
        assert tok.sot_sequence("ko")[1] == tok.language_token("ko") == eot + 1 + 6
        assert tok.sot_sequence("en", "translate")[2] == tok.translate
    assert tok.decode([tok.sot, *tok.encode(" hi"), tok.eot]) == " hi"  # specials are dropped


def test_tokenizer_errors():
    with pytest.raises(ToolkitError, match="unknown language"):
        builtin_tokenizer(51865).language_token("xx")
    with pytest.raises(ToolkitError, match="English-only"):
        builtin_tokenizer(51864).sot_sequence("de")
    with pytest.raises(ToolkitError, match="vocabulary size 1234"):
        builtin_tokenizer(1234)


def test_jfk_is_downmixed_and_resampled(shared_data):
    audio = load_audio(shared_data / "audio" / "jfk.flac")  # 44.1 kHz stereo FLAC
    info = sf.info(str(shared_data / "audio" / "jfk.flac"))
    assert info.channels == 2 and info.samplerate == 44100
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - info.duration) < 0.01
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_log_mel_matches_hugging_face_feature_extractor(shared_data):
    from transformers import WhisperFeatureExtractor

    audio = load_audio(shared_data / "audio" / "jfk.flac")
    for mels in (80, 128):
        ours = log_mel(audio, mels)
        fe = WhisperFeatureExtractor(feature_size=mels)
        ref = fe(audio, sampling_rate=16000, return_tensors="np").input_features[0]
        assert ours.shape == ref.shape == (mels, N_FRAMES)
        assert np.abs(ours - ref).max() < 2e-3


def test_long_audio_is_split_into_windows():
    audio = np.random.default_rng(0).standard_normal(16000 * 65).astype(np.float32) * 0.1
    assert [len(w) for w in windows(audio)] == [480000, 480000, 80000]
    assert features_for(audio, 80).shape == (3, 80, N_FRAMES)


def test_bad_audio_inputs(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    with pytest.raises(ToolkitError, match="cannot decode"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ToolkitError, match="empty"):
        load_audio(empty)
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000, np.float32), 16000)
    with pytest.raises(ToolkitError, match="silent"):
        load_audio(silent)
    nothing = tmp_path / "zero.wav"
    sf.write(str(nothing), np.zeros(0, np.float32), 16000)
    with pytest.raises(ToolkitError, match="no samples|empty"):
        load_audio(nothing)
    with pytest.raises(ToolkitError, match="does not exist"):
        load_audio(tmp_path / "missing.flac")


def test_other_formats_via_ffmpeg(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "tone.mp4"
    sr = 22050
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=sr)
        s.layout = "stereo"
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.stack([x, x])), format="fltp",
                                        layout="stereo")
        fr.sample_rate = sr
        for p in s.encode(fr):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    audio = load_audio(path)
    assert abs(len(audio) / 16000 - 1.0) < 0.1
    spectrum = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5  # the tone survived, at 16 kHz


def test_wrong_mel_bin_count_is_a_clear_error():
    with pytest.raises(ToolkitError, match="128 mel bins but this model expects 80"):
        check_features(np.zeros((1, 128, N_FRAMES), np.float32), 80)
    with pytest.raises(ToolkitError, match="frames"):
        check_features(np.zeros((1, 80, 100), np.float32), 80)
