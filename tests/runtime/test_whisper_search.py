"""The decoding pieces without a model: Whisper's timestamp grammar, segment splitting, and the
search (greedy, sampling, beam) over a toy decoder whose cache carries the token history — so
a beam whose cache was not reordered with it decodes something else."""

import numpy as np
import pytest

from toolkit.core.errors import ToolkitError
from toolkit.runtime.generate import (
    NEG_INF,
    PromptProbe,
    Searcher,
    SearchOptions,
    apply_filters,
    rank_score,
)
from toolkit.runtime.whisper.decoding import TimestampRules
from toolkit.runtime.whisper.longform import _split_segments, fallback_temperatures

EOT, NO_TS, TB, V = 10, 11, 12, 40   # toy vocabulary: 0-9 text, eot, notimestamps, 12.. times


def rules(max_initial=5):
    return TimestampRules(EOT, NO_TS, TB, max_initial)


def allowed(tokens, step=None, logits=None):
    """Which tokens the timestamp rules leave open after ``tokens`` (flat logits by default)."""
    tokens = np.array([tokens], np.int64).reshape(1, -1)
    out = apply_filters([rules()], np.zeros((1, V)) if logits is None else logits[None],
                        tokens.shape[1] if step is None else step, tokens)
    return set(np.flatnonzero(np.isfinite(out[0])).tolist())


def test_first_token_is_a_bounded_timestamp():
    assert allowed([]) == set(range(TB, TB + 6))          # <|0.00|> … max_initial, nothing else


def test_timestamps_come_in_pairs_and_never_decrease():
    text_likely = np.zeros(V)
    text_likely[:EOT + 1] = 5.0                     # text more likely than all times together
    # text after a start time: text, eot or an end time after the start
    opened = allowed([TB + 3, 4], logits=text_likely)
    assert {0, 9, EOT} <= opened and TB + 3 not in opened and TB + 4 in opened
    # a lone (end) timestamp: only a timestamp (the next start, ≥ the end) or end-of-text
    after_end = allowed([TB + 3, 4, TB + 7], logits=text_likely)
    assert after_end == {EOT} | set(range(TB + 7, V))
    # a pair closed: text only (no third timestamp in a row), never <|notimestamps|>
    after_pair = allowed([TB + 3, 4, TB + 7, TB + 7], logits=text_likely)
    assert after_pair == set(range(0, EOT + 1))


def test_a_timestamp_is_forced_when_their_total_beats_every_text_token():
    logits = np.full(V, -5.0)
    logits[3] = 1.0                                  # best single token: text
    logits[TB + 8:] = 0.5                            # many timestamps: more mass together
    assert allowed([TB, 4], logits=logits) == set(range(TB + 1, V))   # no text left
    logits[TB + 8:] = -3.0                           # now the text token wins
    assert 3 in allowed([TB, 4], logits=logits)


def test_segments_split_on_timestamp_pairs_and_seek_to_the_last_complete_one():
    # <|0.0|> a b <|1.0|><|1.0|> c <|2.4|><|2.4|> d   (the last segment is unfinished)
    toks = [TB, 1, 2, TB + 50, TB + 50, 3, TB + 120, TB + 120, 4]
    pieces, consumed = _split_segments(toks, TB, 3000, False)
    assert [(p[1], p[2]) for p in pieces] == [(0, 50), (50, 120)]
    assert consumed == 240                           # 2.4 s = 240 frames: "d" is decoded again
    # ends on a single timestamp: the window is consumed
    pieces, consumed = _split_segments([TB, 1, TB + 80, TB + 80, 2, TB + 100], TB, 3000, False)
    assert [(p[1], p[2]) for p in pieces] == [(0, 80), (80, 100)] and consumed == 3000
    # no pair: one segment for the window, ending at its last timestamp
    pieces, consumed = _split_segments([TB, 1, 2, TB + 40], TB, 1800, False)
    assert pieces == [([TB, 1, 2, TB + 40], 0, 40)] and consumed == 1800


def test_a_pair_at_zero_seconds_does_not_lose_the_window():
    """<|0.00|><|0.00|> then unfinished text: seeking to 0 s would not move; the window is one
    segment instead of being skipped with its text."""
    pieces, consumed = _split_segments([TB, TB, 1, 2], TB, 3000, False)
    assert pieces == [([TB, TB, 1, 2], 0, 1500)] and consumed == 3000


def test_fallback_temperatures_follow_openai_whisper_cli():
    assert fallback_temperatures(0.0, 0.2) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert fallback_temperatures(0.5, 0) == (0.5,)


# -- a toy decoder ---------------------------------------------------------------------------
class ToyDecoder:
    """Logits are a fixed function of the whole token history; the "KV cache" holds that
    history (one value per position), so the step only sees the history through its cache."""

    def __init__(self, vocab=12, eot=10, seed=0):
        self.vocab, self.eot = vocab, eot
        self.table = np.random.default_rng(seed).standard_normal((97, vocab)) * 2.0
        self.calls = 0

    def logits_for(self, history) -> np.ndarray:
        h = 7
        for t in history:
            h = (h * 31 + int(t) + 1) % 97
        out = self.table[h].copy()
        if len(history) >= 6:
            out[self.eot] += 4.0                     # sequences end
        return out

    def step(self, ids, past, cross):
        self.calls += 1
        hist = np.concatenate([past["past_key_0"][:, 0, :, 0], ids.astype(np.float32)], axis=1)
        logits = np.stack([self.logits_for(row.astype(np.int64)) for row in hist])
        present = {"past_key_0": hist[:, None, :, None], "past_value_0": hist[:, None, :, None]}
        return logits.astype(np.float32), present

    @staticmethod
    def take(arrays, rows):
        return {k: np.ascontiguousarray(np.asarray(v)[rows]) for k, v in arrays.items()}

    @staticmethod
    def empty_cache(n):
        z = np.zeros((n, 1, 0, 1), np.float32)
        return {"past_key_0": z, "past_value_0": z}

    def searcher(self):
        return Searcher(self.step, self.take, self.empty_cache, self.eot, [])


def reference_beam(dec, prompt, beam, limit, patience=1.0, length_penalty=None):
    """openai-whisper's beam search written plainly: no cache, every step re-scores each
    beam's whole history."""
    beams, finished = [((), 0.0)] * beam, {}
    max_finished = round(beam * patience)
    for _ in range(limit):
        cands = {}
        for seq, score in beams:
            logits = dec.logits_for(list(prompt) + list(seq))
            logp = logits - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())
            for t in np.argsort(-logp)[:beam + 1]:
                cands[seq + (int(t),)] = score + logp[t]
        beams, fresh = [], {}
        for seq in sorted(cands, key=cands.get, reverse=True):
            if seq[-1] == dec.eot:
                fresh[seq] = cands[seq]
            else:
                beams.append((seq, cands[seq]))
                if len(beams) == beam:
                    break
        for seq in sorted(fresh, key=fresh.get, reverse=True):
            if len(finished) >= max_finished:
                break
            finished[seq] = fresh[seq]
        if len(finished) >= max_finished:
            break
    for seq, score in beams:
        if len(finished) >= beam:
            break
        finished.setdefault(seq, score)
    best = max(finished, key=lambda s: rank_score(finished[s], len([t for t in s if t != dec.eot]),
                                                  length_penalty))
    return [t for t in best if t != dec.eot]


CROSS = {"cross_key_0": np.zeros((1, 1, 1, 1), np.float32)}


def test_greedy_follows_the_argmax_through_the_cache():
    dec = ToyDecoder()
    res = dec.searcher().run(CROSS, [3, 4], SearchOptions(), limit=12)
    hist, want = [3, 4], []
    for _ in range(12):
        t = int(np.argmax(dec.logits_for(hist)))
        if t == dec.eot:
            break
        want.append(t)
        hist.append(t)
    assert res.hypotheses[0].tokens == want
    assert res.hypotheses[0].sum_logprob < 0


@pytest.mark.parametrize("seed,beam,patience,penalty", [(0, 2, 1.0, None), (1, 3, 1.0, None),
                                                        (2, 5, 2.0, None), (3, 4, 1.0, 0.6)])
def test_beam_search_equals_a_plain_reimplementation(seed, beam, patience, penalty):
    dec = ToyDecoder(seed=seed)
    opts = SearchOptions(beam_size=beam, patience=patience, length_penalty=penalty)
    got = dec.searcher().run(CROSS, [5], opts, limit=9).hypotheses[0]
    assert got.tokens == reference_beam(dec, [5], beam, 9, patience, penalty)
    assert got.sum_logprob < 0 and len(got.tokens) >= 1


def test_the_prompt_probe_reads_a_token_before_any_rule_at_no_extra_cost():
    """A probe inside the prompt splits the prefill there (same number of decoder calls as a
    probe at the prompt's end plus one) and reads softmax(logits)[token] at that position."""
    dec = ToyDecoder(seed=4)
    lp = dec.logits_for([3])
    want = float(np.exp(lp[7] - np.log(np.exp(lp - lp.max()).sum()) - lp.max()))
    plain = dec.searcher().run(CROSS, [3, 4], SearchOptions(), limit=5)
    probed = dec.searcher().run(CROSS, [3, 4], SearchOptions(), limit=5,
                                probe=PromptProbe(0, 7))
    assert probed.hypotheses[0].probe == pytest.approx(want, rel=1e-5)
    assert plain.hypotheses[0].probe is None
    assert probed.hypotheses[0].tokens == plain.hypotheses[0].tokens
    assert probed.steps == plain.steps + 1


def test_beam_search_reorders_the_cache_with_its_beams():
    """The same search with the reorder skipped decodes from the wrong histories."""
    dec = ToyDecoder(seed=1)
    good = dec.searcher().run(CROSS, [5], SearchOptions(beam_size=4), limit=8).hypotheses[0]
    broken = Searcher(dec.step, lambda arrays, rows: arrays if len(rows) ==
                      next(iter(arrays.values())).shape[0] else ToyDecoder.take(arrays, rows),
                      dec.empty_cache, dec.eot, [])
    bad = broken.run(CROSS, [5], SearchOptions(beam_size=4), limit=8).hypotheses[0]
    assert good.tokens != bad.tokens or good.sum_logprob != pytest.approx(bad.sum_logprob)


def test_beam_search_batches_windows_independently():
    dec = ToyDecoder(seed=2)
    cross2 = {"cross_key_0": np.zeros((2, 1, 1, 1), np.float32)}
    both = dec.searcher().run(cross2, [5], SearchOptions(beam_size=3), limit=8)
    one = dec.searcher().run(CROSS, [5], SearchOptions(beam_size=3), limit=8)
    assert both.hypotheses[0].tokens == both.hypotheses[1].tokens == one.hypotheses[0].tokens


def test_sampling_is_seeded_and_best_of_picks_the_most_likely():
    dec = ToyDecoder(seed=3)
    opts = SearchOptions(temperature=1.0, best_of=5)
    a = dec.searcher().run(CROSS, [5], opts, limit=8, rng=np.random.default_rng(7))
    b = dec.searcher().run(CROSS, [5], opts, limit=8, rng=np.random.default_rng(7))
    assert a.hypotheses[0].tokens == b.hypotheses[0].tokens
    single = [dec.searcher().run(CROSS, [5], SearchOptions(temperature=1.0), limit=8,
                                 rng=np.random.default_rng(s)).hypotheses[0] for s in range(20)]
    assert len({tuple(h.tokens) for h in single}) > 1      # it does sample


def test_search_options_are_checked():
    dec = ToyDecoder()
    with pytest.raises(ToolkitError, match="--beam-size must be at least 1"):
        dec.searcher().run(CROSS, [5], SearchOptions(beam_size=0), limit=4)
    with pytest.raises(ToolkitError, match="--length-penalty"):
        dec.searcher().run(CROSS, [5], SearchOptions(length_penalty=2.0), limit=4)


def test_nan_logits_are_refused_in_beam_search():
    dec = ToyDecoder()
    real_step = dec.step

    def nan_step(ids, past, cross):
        logits, present = real_step(ids, past, cross)
        if past["past_key_0"].shape[2] >= 2:
            logits[:] = np.nan
        return logits, present

    s = Searcher(nan_step, dec.take, dec.empty_cache, dec.eot, [])
    with pytest.raises(ToolkitError, match="NaN or infinite logits"):
        s.run(CROSS, [5], SearchOptions(beam_size=3), limit=6)
    assert NEG_INF == -np.inf


def test_log_softmax_at_is_the_full_log_softmax_at_those_tokens():
    from toolkit.runtime.generate import log_softmax, log_softmax_at
    rng = np.random.default_rng(0)
    x = rng.normal(0, 4, (6, 1000)).astype(np.float32)
    x[1, :900] = -np.inf                          # suppressed tokens
    x[2, :] = -np.inf                             # a row with nothing left
    idx = np.argpartition(-x, 5, axis=-1)[:, :6]
    full = np.take_along_axis(log_softmax(x), idx, axis=-1)
    part = log_softmax_at(x, idx)
    assert np.array_equal(np.isnan(full), np.isnan(part))
    assert np.array_equal(full[np.isfinite(full)], part[np.isfinite(full)])   # bit-identical
