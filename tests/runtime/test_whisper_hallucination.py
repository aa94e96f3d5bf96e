"""--hallucination-silence-threshold (openai-whisper's rule, with --word-timestamps): on the
recording of speech between silence, noise and music, greedy tiny.en writes "Thank you." into
the digital silence at the end; with the threshold that segment is dropped (its words are
improbable or instantaneous and silence surrounds it) and every segment of the speech stays
as it was. The rule's scoring on hand-made words; the option refused in one line without
--word-timestamps and out of range."""

from __future__ import annotations

import pytest

from support.cli import fails_cleanly
from support.recordings import speech_with_gaps, words_outside_speech
from toolkit import registry
from toolkit.bench.metrics import scores
from toolkit.runtime.whisper.longform import (
    Segment,
    TranscribeOptions,
    looks_hallucinated,
    word_anomaly,
)
from toolkit.runtime.whisper.timing import WordTiming


def _segment(*words: tuple[str, float, float, float]) -> Segment:
    return Segment(0, 0, words[0][1], words[-1][2], "".join(w[0] for w in words), [], 0.0,
                   -0.5, 1.0, 0.1, [WordTiming(w, [], a, b, p) for w, a, b, p in words])


def test_the_anomaly_score_of_words_and_segments():
    assert word_anomaly(WordTiming(" so", [], 1.0, 1.3, 0.9)) == 0.0
    assert word_anomaly(WordTiming(" so", [], 1.0, 1.3, 0.1)) == 1.0          # improbable
    assert word_anomaly(WordTiming(" so", [], 1.0, 1.0, 0.9)) == pytest.approx(0.133 * 15)
    assert word_anomaly(WordTiming(" so", [], 1.0, 4.5, 0.9)) == pytest.approx(1.5)  # long
    # the end-of-file "Thank you." greedy tiny.en writes: improbable, then instantaneous
    assert looks_hallucinated(_segment((" Thank", 149.9, 151.3, 0.005),
                                       (" you.", 151.3, 151.3, 0.96)))
    speech = [(" And", 0.0, 0.3, 0.5), (" so", 0.3, 0.6, 0.97), (" my", 0.6, 0.9, 0.6),
              (" fellow", 0.9, 1.2, 0.99)]
    assert not looks_hallucinated(_segment(*speech))
    # punctuation is not counted as a word
    assert not looks_hallucinated(_segment(*speech, (" -", 1.2, 1.2, 0.01)))
    assert looks_hallucinated(_segment((" -", 1.2, 1.2, 0.9)))     # punctuation alone
    assert not looks_hallucinated(Segment(0, 0, 0.0, 1.0, " x", [], 0.0, -0.5, 1.0, 0.1, []))


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory):
    rec = speech_with_gaps(shared_data, tmp_path_factory.mktemp("hal") / "gaps.wav")
    pipe = registry.get("whisper").open_pipeline(backend="ort", threads=1)
    out = {th: pipe.transcribe(rec.path, TranscribeOptions(
        beam_size=1, word_timestamps=True, hallucination_silence_threshold=th), progress=False)
        for th in (None, 2.0)}
    return rec, out


def test_the_threshold_drops_the_words_written_into_silence(runs):
    rec, out = runs
    plain, skipped = out[None], out[2.0]
    assert words_outside_speech(plain["segments"], rec) == ["Thank", "you."]
    assert plain["segments"][-1]["start"] > rec.speech[-1][1] + 10      # in the silence
    assert words_outside_speech(skipped["segments"], rec) == []
    assert all(w["end"] <= rec.speech[-1][1] + 1 for s in skipped["segments"]
               for w in s["words"])
    # the speech is untouched: the same segments, times and words
    keep = [(s["start"], s["end"], s["text"], s["words"]) for s in plain["segments"][:-1]]
    assert [(s["start"], s["end"], s["text"], s["words"]) for s in skipped["segments"]] == keep
    before = scores([plain["text"]], [rec.reference])["cer"]
    after = scores([skipped["text"]], [rec.reference])["cer"]
    assert after < before and after < 1.0, (before, after)
    # the window with the doubtful segment was dropped and decoded again from its start
    assert skipped["windows"] == plain["windows"] + 1


def test_the_threshold_needs_word_timestamps(shared_data):
    jfk = shared_data / "audio" / "jfk.flac"
    fails_cleanly("transcribe", jfk, "--hallucination-silence-threshold", "2",
                  contains="needs --word-timestamps")
    fails_cleanly("transcribe", jfk, "--word-timestamps", "--hallucination-silence-threshold",
                  "-1", contains="--hallucination-silence-threshold")
    fails_cleanly("transcribe", jfk, "--word-timestamps", "--hallucination-silence-threshold",
                  "nan", contains="--hallucination-silence-threshold")
