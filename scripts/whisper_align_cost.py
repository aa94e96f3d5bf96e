"""Per-window cost of word timestamps: the log-mel + encoder, the align graph, timing.py and
DTW alone (min and median of repeats, one thread), on jfk.flac:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/whisper_align_cost.py ARTIFACT
"""
import sys
import time

import numpy as np

from toolkit import registry
from toolkit.models.whisper.audio import features_for, load_audio
from toolkit.runtime.whisper.timing import dtw, find_alignment

ART = sys.argv[1]
pipe = registry.get("whisper").open_pipeline(artifact=ART, threads=1)
audio = load_audio("../shared/data/audio/jfk.flac")
cross = pipe.encode(features_for(audio, pipe.n_mels)[:1])
tok = pipe.tokenizer
res = pipe.transcribe_audio(audio)
text = [t for s in res.segments for t in s.tokens if t < tok.eot]
prefix = tok.sot_sequence(None)
seq = [*prefix, *text, tok.eot]


def best(f, n=15):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts) * 1e3, float(np.median(ts)) * 1e3


qk, lp = pipe.align_scores(cross, seq)
enc = best(lambda: pipe.encode(features_for(audio, pipe.n_mels)[:1]), 5)
al = best(lambda: pipe.align_scores(cross, seq))
post = best(lambda: find_alignment(tok, text, len(prefix), qk, lp, 1100))
big = -np.random.default_rng(0).random((225, 1500))
d = best(lambda: dtw(big), 5)
print(f"jfk: {len(text)} text tokens; log-mel + encoder min {enc[0]:.1f} ms; align graph min "
      f"{al[0]:.1f} ms (median {al[1]:.1f}); timing.py post-processing min {post[0]:.1f} ms "
      f"(median {post[1]:.1f}); DTW 225x1500 min {d[0]:.1f} ms (median {d[1]:.1f})")
