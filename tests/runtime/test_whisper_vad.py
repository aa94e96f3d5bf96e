"""--vad-filter: Silero VAD on the toolkit's onnxruntime session finds the speech, only that is
decoded, and times map back to the file. On a recording of speech between long stretches of
a quiet room, music-like tones, pink noise and digital silence, the trained tiny.en writes
words over the non-speech without the filter and none with it; the speech keeps its CER and
fewer windows are decoded in less time."""

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from support.cli import fails_cleanly, run_toolkit
from support.recordings import JFK, clips_with_pauses, speech_with_gaps, words_outside_speech
from toolkit import registry
from toolkit.bench.metrics import scores
from toolkit.models.whisper.audio import SAMPLE_RATE, load_audio
from toolkit.runtime.whisper.longform import TranscribeOptions
from toolkit.runtime.whisper.vad import (
    FRAME,
    MODEL_FILE,
    SpeechMap,
    detect_speech,
    speech_chunks,
    speech_probabilities,
    speech_spans,
    transcribe_chunks,
)

SR = SAMPLE_RATE


def _probs(pattern: list[tuple[float, float]]) -> np.ndarray:
    """Frame probabilities from (seconds, probability) runs."""
    return np.concatenate([np.full(round(s * SR / FRAME), p, np.float32) for s, p in pattern])


def test_spans_end_after_min_silence_and_are_padded():
    probs = _probs([(2, 0.0), (3, 0.9), (1, 0.1), (3, 0.9), (5, 0.0), (2, 0.8), (3, 0.0)])
    n = len(probs) * FRAME
    # 1 s of silence is shorter than min_silence 2 s: the first two stretches are one span
    spans = speech_spans(probs, n, 0.5, min_silence_ms=2000, speech_pad_ms=400)
    assert len(spans) == 2
    (a0, b0), (a1, b1) = spans
    assert abs(a0 / SR - (2 - 0.4)) < 0.04 and abs(b0 / SR - (9 + 0.4)) < 0.04
    assert abs(a1 / SR - (14 - 0.4)) < 0.04 and abs(b1 / SR - (16 + 0.4)) < 0.04
    # a shorter min_silence splits them
    assert len(speech_spans(probs, n, 0.5, min_silence_ms=500, speech_pad_ms=400)) == 3


def test_hysteresis_keeps_speech_between_the_two_thresholds():
    # 0.4 is below 0.5 (no start) but above 0.35 (no end once started)
    probs = _probs([(1, 0.0), (1, 0.4), (1, 0.9), (4, 0.4), (3, 0.0)])
    spans = speech_spans(probs, len(probs) * FRAME, 0.5, min_silence_ms=1000, speech_pad_ms=0)
    assert len(spans) == 1
    a, b = spans[0]
    assert abs(a / SR - 2) < 0.04 and abs(b / SR - 7) < 0.04


def test_close_spans_meet_half_way():
    probs = _probs([(1, 0.9), (0.5, 0.0), (1, 0.9)])
    spans = speech_spans(probs, len(probs) * FRAME, 0.5, min_silence_ms=100, speech_pad_ms=400)
    assert len(spans) == 2 and spans[0][1] == spans[1][0]       # touching, not overlapping
    assert spans[0][0] == 0 and spans[-1][1] == len(probs) * FRAME   # clipped to the file


def test_joined_speech_maps_times_back():
    speech = SpeechMap()
    for a, b in [(1 * SR, 11 * SR), (20 * SR, 25 * SR), (25 * SR, 31 * SR), (60 * SR, 70 * SR)]:
        speech.add(a, b)
    # touching spans are one piece
    assert speech.pieces == [(SR, 11 * SR), (20 * SR, 31 * SR), (60 * SR, 70 * SR)]
    assert speech.speech_s == 31.0
    assert speech.original(0.0) == 1.0 and speech.original(5.0) == 6.0
    assert speech.original(10.0) == 20.0               # a start on a border: the next piece
    assert speech.original(10.0, end=True) == 11.0     # an end on a border: the piece before
    assert speech.original(25.0) == 64.0 and speech.original(40.0) == 70.0   # clipped
    x = np.arange(12.0)
    assert SpeechMap([(1, 3), (5, 7)]).audio(x).tolist() == [1, 2, 5, 6]
    # a segment inside a piece maps as it is; one over a join keeps the piece it overlaps most
    assert speech.span(2.0, 8.0) == (3.0, 9.0)
    assert speech.span(8.0, 13.0) == (20.0, 23.0)      # 2 s in the first piece, 3 in the second
    assert speech.span(4.0, 11.0) == (5.0, 11.0)       # 6 s in the first piece, 1 in the second


def test_speech_is_cut_into_chunks_of_at_most_30_s_in_order():
    speech = SpeechMap([(0, 12 * SR), (20 * SR, 35 * SR), (40 * SR, 44 * SR),
                        (50 * SR, 100 * SR), (101 * SR, 103 * SR)])
    chunks = speech_chunks(speech)
    # 12 + 15 s of speech fit in one window, 4 more would not; a 50-s piece is a chunk alone
    assert [c.pieces for c in chunks] == [[(0, 12 * SR), (20 * SR, 35 * SR)],
                                          [(40 * SR, 44 * SR)], [(50 * SR, 100 * SR)],
                                          [(101 * SR, 103 * SR)]]
    assert chunks[0].original(13.0) == 21.0          # each chunk maps its own times back
    assert speech_chunks(SpeechMap()) == []


def test_the_model_is_silero_vad_6_2_3():
    asset = Path(registry.__file__).parent / "assets" / "vad" / MODEL_FILE
    digest = hashlib.sha256(asset.read_bytes()).hexdigest()
    assert digest == "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"
    spec = importlib.util.find_spec("silero_vad")       # (found, not imported: it needs torch)
    if spec is None:
        pytest.skip("silero-vad is not installed (the dev extra pins it)")
    shipped = Path(spec.submodule_search_locations[0]) / "data" / MODEL_FILE
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == digest


def test_speech_probabilities_find_jfk(shared_data):
    jfk = load_audio(shared_data / "audio" / "jfk.flac")
    x = np.concatenate([np.zeros(3 * SR, np.float32), jfk, np.zeros(3 * SR, np.float32)])
    probs = speech_probabilities(x)
    assert len(probs) == -(-len(x) // FRAME)
    t = np.arange(len(probs)) * FRAME / SR
    assert probs[t < 2.9].max() < 0.1                            # silence before
    assert (probs[(t > 3.3) & (t < 13.5)] > 0.5).mean() > 0.6     # mostly speech
    spans = speech_spans(probs, len(x), speech_pad_ms=400)
    assert len(spans) == 1 and 2.4 < spans[0][0] / SR < 3.4 and 13.5 < spans[0][1] / SR <= 17.1


# -- the trained tiny.en on speech between silence, noise and music ----------------------------

@pytest.fixture(scope="module")
def recording(shared_data, tmp_path_factory):
    return speech_with_gaps(shared_data, tmp_path_factory.mktemp("vad") / "gaps.wav")


@pytest.fixture(scope="module")
def both(recording, shared_data):
    """The recording transcribed (defaults: beam 5, fallback) without and with the filter."""
    pipe = registry.get("whisper").open_pipeline(backend="ort")
    pipe.transcribe(shared_data / "audio" / "jfk.flac")          # warm the sessions up
    plain = pipe.transcribe(recording.path, TranscribeOptions())
    vad = pipe.transcribe(recording.path, TranscribeOptions(vad_filter=True))
    return plain, vad


def test_without_vad_words_are_written_over_non_speech(recording, both):
    plain, _ = both
    extra = words_outside_speech(plain["segments"], recording)
    assert extra, [(s["start"], s["end"], s["text"]) for s in plain["segments"]]


def test_with_vad_no_words_over_non_speech_and_the_speech_keeps_its_cer(recording, both):
    plain, vad = both
    assert words_outside_speech(vad["segments"], recording) == []
    with_vad = scores([vad["text"]], [recording.reference])
    without = scores([plain["text"]], [recording.reference])
    assert with_vad["cer"] <= without["cer"] + 0.5 and with_vad["cer"] < 8.0, (with_vad, without)
    assert with_vad["inserted"] <= without["inserted"]


def test_vad_times_are_the_file_s(recording, both):
    _, vad = both
    segs = vad["segments"]
    assert segs and segs[0]["start"] >= recording.speech[0][0] - 1.0
    for a, b in zip(segs, segs[1:]):
        assert a["start"] < a["end"] <= b["start"] + 1e-6
    assert segs[-1]["end"] <= recording.duration
    # each clip's words are in segments overlapping its span
    for start, end, text in recording.speech:
        near = " ".join(s["text"] for s in segs if s["end"] > start - 0.5 and s["start"] < end + 0.5)
        assert scores([near], [text])["wer"] < 35, (text, near)
    kept = vad["vad"]
    pad = TranscribeOptions().speech_pad_ms / 1000
    # every stretch of speech kept (give or take the padding), nothing else
    assert recording.speech_s - 2 <= kept["speech_s"] <= recording.speech_s + 2 * pad * 4 + 2
    assert len(kept["spans"]) == len(recording.speech)
    for (a, b), (s, e, _) in zip(kept["spans"], recording.speech):
        # (the beat after the first jfk.flac reads as speech for 2.6 s more)
        assert s - pad - 0.5 <= a <= s + 1.5 and e - 1.5 <= b <= e + pad + 3.0


def test_vad_decodes_fewer_windows_and_steps(both):
    """(Wall time on a shared CPU is measured by tests/support/vad_side_by_side.py, medians of
    several runs; here what it is made of: windows through the encoder, decoder steps.)"""
    plain, vad = both
    assert vad["windows"] < plain["windows"]
    assert vad["decode_steps"] < plain["decode_steps"]
    assert vad["vad"]["vad_ms"] > 0      # recorded; its share of the time is a bench figure


# -- the command ---------------------------------------------------------------------------

def test_transcribe_vad_filter_writes_json_and_subtitles(shared_data, tmp_path):
    proc = run_toolkit("transcribe", shared_data / "audio" / "jfk.flac", "--vad-filter",
                       "--beam-size", "1", "--output-format", "json,srt", "--output-dir",
                       tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "jfk.json").read_text())
    assert scores([out["text"]], [JFK])["wer"] == 0.0
    assert len(out["vad"]["spans"]) == 1 and out["segments"][0]["start"] >= 0
    assert " --> " in (tmp_path / "jfk.srt").read_text()


def test_vad_options_are_checked(shared_data, tmp_path):
    jfk = shared_data / "audio" / "jfk.flac"
    fails_cleanly("transcribe", jfk, "--vad-filter", "--vad-threshold", "1.5",
                  contains="--vad-threshold")
    fails_cleanly("transcribe", jfk, "--vad-filter", "--min-silence-ms", "-1",
                  contains="--min-silence-ms")
    fails_cleanly("transcribe", jfk, "--vad-filter", "--speech-pad-ms", "99999",
                  contains="--speech-pad-ms")
    feats = tmp_path / "f.npy"
    np.save(feats, np.zeros((1, 80, 3000), np.float32))
    fails_cleanly("transcribe", feats, "--vad-filter", contains="--vad-filter needs the audio")


# -- batched long-form: the VAD's chunks decoded several at a time ----------------------------

@pytest.fixture(scope="module")
def paused(shared_data, tmp_path_factory):
    """8 LJ clips between 3–6-s pauses, transcribed (greedy, no previous text, word
    timestamps) with the speech joined (--batch-size 1), as chunks one after the other, and
    as chunks two at a time (--batch-size 2: the pool is refilled as chunks finish)."""
    rec = clips_with_pauses(shared_data, tmp_path_factory.mktemp("batched") / "paused.wav")
    pipe = registry.get("whisper").open_pipeline(backend="ort", threads=1)
    audio = load_audio(rec.path)
    opts = TranscribeOptions(vad_filter=True, beam_size=1, word_timestamps=True,
                             condition_on_previous_text=False)
    joined = pipe.transcribe_audio(audio, opts)
    one_by_one = transcribe_chunks(pipe, audio, detect_speech(audio, opts), opts, 1)
    batched = pipe.transcribe_audio(audio, replace(opts, batch_size=2))
    return rec, joined, one_by_one, batched


def _timed(result):
    return [(s.start, s.end, s.text, s.tokens, s.words) for s in result.segments]


def test_batched_chunks_give_what_chunk_by_chunk_gives(paused):
    rec, _, one_by_one, batched = paused
    assert batched.vad["chunks"] >= 3 and batched.vad["batch_size"] == 2
    assert batched.vad["chunks"] == one_by_one.vad["chunks"]
    assert _timed(batched) == _timed(one_by_one) and batched.text == one_by_one.text
    assert batched.windows == one_by_one.windows >= batched.vad["chunks"]


def test_batched_segments_are_in_file_order_with_the_file_s_times(paused):
    rec, _, _, batched = paused
    segs = batched.segments
    assert [s.id for s in segs] == list(range(len(segs)))
    for a, b in zip(segs, segs[1:]):
        assert a.start < a.end <= b.start + 1e-6
    words = [w for s in segs for w in s.words]
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    for start, end, text in rec.speech:        # each clip's text where the clip is
        near = " ".join(s.text for s in segs if s.end > start - 0.5 and s.start < end + 0.5)
        assert scores([near], [text])["wer"] < 35, (text, near)
    assert all(any(a - 1.5 <= w.start and w.end <= b + 1.5 for a, b, _ in rec.speech)
               for w in words)


def test_batched_keeps_the_cer_of_the_joined_speech(paused):
    rec, joined, _, batched = paused
    cer_joined = scores([joined.text], [rec.reference])["cer"]
    cer_batched = scores([batched.text], [rec.reference])["cer"]
    print(f"CER joined {cer_joined:.2f} %, batched {cer_batched:.2f} %; windows "
          f"{joined.windows} / {batched.windows}")
    assert cer_batched <= cer_joined + 1.0 and cer_batched < 5.0, (cer_joined, cer_batched)


def test_transcribe_batch_size_writes_words_and_subtitles(shared_data, tmp_path):
    proc = run_toolkit("transcribe", shared_data / "audio" / "jfk.flac", "--vad-filter",
                       "--batch-size", "4", "--word-timestamps", "--beam-size", "1",
                       "--output-format", "json,srt", "--output-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "jfk.json").read_text())
    assert scores([out["text"]], [JFK])["wer"] == 0.0
    assert out["vad"]["chunks"] == 1
    words = [w for s in out["segments"] for w in s["words"]]
    assert len(words) == 22 and all(0 <= w["start"] <= w["end"] <= 11.1 for w in words)
    assert " --> " in (tmp_path / "jfk.srt").read_text()


def test_batch_size_is_checked(shared_data):
    jfk = shared_data / "audio" / "jfk.flac"
    fails_cleanly("transcribe", jfk, "--batch-size", "4", contains="give --vad-filter too")
    fails_cleanly("transcribe", jfk, "--vad-filter", "--batch-size", "0",
                  contains="--batch-size")
    fails_cleanly("transcribe", jfk, "--vad-filter", "--batch-size", "2.5",
                  contains="--batch-size takes a whole number")


def test_batched_without_speech_decodes_nothing():
    pipe = registry.get("whisper").open_pipeline(backend="ort", threads=1)
    silent = np.zeros(5 * SR, np.float32)
    res = pipe.transcribe_audio(silent, TranscribeOptions(vad_filter=True, batch_size=4))
    assert res.segments == [] and res.windows == 0
    assert res.vad["chunks"] == 0 and res.vad["spans"] == []
