"""The server's batched decoding gives each recording the transcript it gets alone: several
recordings (one of them long enough to need three windows) advanced together, window by
window, by ``longform.advance`` on the trained tiny.en."""

from pathlib import Path

import numpy as np

from toolkit import registry
from toolkit.models.whisper.audio import N_FRAMES, SAMPLE_RATE, load_audio, log_mel_long
from toolkit.runtime.whisper.longform import LongFormJob, TranscribeOptions, advance

open_pipeline = registry.get("whisper").open_pipeline

ASSETS = Path(__file__).resolve().parents[2] / "toolkit" / "assets" / "speech" / "wavs"


def test_batched_windows_give_the_transcripts_of_one_at_a_time(tiny_en_artifact):
    pipe = open_pipeline(artifact=tiny_en_artifact)
    clips = [load_audio(p) for p in sorted(ASSETS.glob("*.flac"))]
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    long = np.concatenate([c for clip in clips for c in (clip, gap)] * 2)   # ~70 s
    recordings = [long] + clips
    options = TranscribeOptions()
    alone = [pipe.transcribe_audio(a, options) for a in recordings]

    jobs = []
    for a in recordings:
        mel = log_mel_long(a, pipe.n_mels)
        jobs.append(LongFormJob.start(pipe, mel, mel.shape[1] - N_FRAMES,
                                      len(a) / SAMPLE_RATE, options))
    batches = []
    search = pipe.search

    def spy(cross, prompt, *args, **kwargs):
        batches.append(next(iter(cross.values())).shape[0])
        return search(cross, prompt, *args, **kwargs)
    pipe.search = spy
    rounds = []
    while not all(j.done for j in jobs):
        rounds.append(sum(not j.done for j in jobs))
        advance(pipe, jobs, max_windows=4)      # 6 recordings: two encoder/decoder chunks
    pipe.close()

    assert rounds[0] == len(recordings) and rounds[-1] == 1 and len(rounds) >= 3
    assert max(batches) == 4                  # windows of different recordings searched together
    for a, j in zip(alone, jobs):
        assert j.result.text == a.text
        assert [(s.start, s.end) for s in j.result.segments] == \
            [(s.start, s.end) for s in a.segments]
    assert "ask not what your country can do for you" in jobs[0].result.text
