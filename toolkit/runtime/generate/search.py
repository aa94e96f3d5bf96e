"""Greedy decoding, sampling (best of N) and beam search, written once over a decoder step.

Every family and every backend runs the same code: ``step(ids, past, cross) -> (logits,
present)`` is the only thing that touches a Session, so the torch, onnxruntime and TensorRT rows
of a benchmark decode with identical rules. Rows of the decoder batch are ``inputs × group``
(group = beams, or samples for best-of-N); the cache of each row (self-attention K/V, or a
recurrent state) is reordered when beams change parents, the encoder's cross-attention K/V stay
one per input.

Scores follow openai-whisper (and Marian's ``normalize: 1``): a token's log-probability is
taken after the logit rules, the sum includes the end token, a finished candidate is ranked by
``sum / length`` (or by ``sum / ((5 + length) / 6) ** length_penalty`` with a length penalty),
``avg_logprob`` is ``sum / (length + 1)``. A ``PromptProbe`` reads the probability of one token
at one prompt position, before any rule (Whisper's no-speech probability at
``<|startoftranscript|>``); it is a hook any family may use, not a Whisper special case.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ...core.errors import Cancelled, ToolkitError
from .filters import LogitFilter, apply_filters, log_softmax, log_softmax_at, logsumexp


@dataclass
class PromptProbe:
    """The probability of ``token`` after the prompt's first ``index + 1`` tokens, taken before
    any logit rule. With ``index`` before the prompt's end the prompt goes in two decoder calls
    split there, so the probe costs no extra step."""

    index: int
    token: int


@dataclass
class Hypothesis:
    """The chosen sequence of one input (an audio window, a sentence, an image)."""

    tokens: list[int]                 # generated, without the prompt and the end token
    sum_logprob: float = 0.0
    probe: float | None = None        # the PromptProbe's probability, when one was given

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) + 1)


@dataclass
class SearchResult:
    hypotheses: list[Hypothesis]      # one per input
    step_ms: list[float] = field(default_factory=list)   # per decoder call

    @property
    def steps(self) -> int:
        return len(self.step_ms)


@dataclass
class SearchOptions:
    beam_size: int = 1                # 1 = greedy (or sampling when temperature > 0)
    best_of: int = 1                  # samples per input when temperature > 0
    temperature: float = 0.0
    patience: float = 1.0             # beam search stops after round(beam_size × patience) finals
    length_penalty: float | None = None
    max_new_tokens: int = 224
    text_only: bool = False           # forced length: no end-of-text (benchmarks)

    def check(self) -> None:
        if self.beam_size < 1:
            raise ToolkitError(f"--beam-size must be at least 1 (got {self.beam_size})")
        if self.best_of < 1:
            raise ToolkitError(f"--best-of must be at least 1 (got {self.best_of})")
        if self.temperature < 0:
            raise ToolkitError(f"--temperature must be 0 or more (got {self.temperature})")
        if self.patience <= 0:
            raise ToolkitError(f"--patience must be above 0 (got {self.patience})")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise ToolkitError(f"--length-penalty must be between 0 and 1 (got "
                               f"{self.length_penalty})")


def rank_score(sum_logprob: float, length: int, length_penalty: float | None) -> float:
    """openai-whisper's ``MaximumLikelihoodRanker``: log-probability over a length penalty."""
    penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
    return sum_logprob / max(penalty, 1e-9)


class Searcher:
    """One search over a batch of inputs that share a prompt.

    ``step(ids, past, cross)`` runs the decoder; ``take(arrays, rows)`` selects (and repeats)
    batch rows of cache arrays wherever the backend keeps them.
    """

    def __init__(self, step: Callable, take: Callable, empty_cache: Callable, eot: int,
                 filters: Sequence[LogitFilter], backend: str = "",
                 stop: Callable[[], bool] | None = None):
        self.step = step
        self.stop = stop            # polled before every decoder call: True ends the search
        self.take = take
        self.empty_cache = empty_cache
        self.eot = eot
        self.filters = filters
        self.backend = backend
        self.step_ms: list[float] = []

    def _timed_step(self, ids, past, cross):
        if self.stop is not None and self.stop():
            raise Cancelled("the search was stopped (its request timed out or went away)")
        t0 = time.perf_counter()
        out = self.step(ids, past, cross)
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        return out

    def _nan(self, i: int):
        return ToolkitError(f"the decoder ({self.backend}) produced NaN or infinite logits at "
                            f"step {i}; the graph overflows on this input (fp16?) — use an fp32 "
                            "artifact")

    def prefill(self, cross: dict, prompt: list[int], probe: PromptProbe | None, n: int):
        """The prompt step(s): (logits after the prompt, cache, the probe's value per input)."""
        ids = np.tile(np.asarray(prompt, np.int64), (n, 1))
        past = self.empty_cache(n)
        probed = [None] * n
        if probe is not None and probe.index < len(prompt) - 1:
            logits, past = self._timed_step(ids[:, :probe.index + 1], past, cross)
            probed = self._probe(logits, probe)
            logits, past = self._timed_step(ids[:, probe.index + 1:], past, cross)
        else:
            logits, past = self._timed_step(ids, past, cross)
            if probe is not None:
                probed = self._probe(logits, probe)
        return logits, past, probed

    @staticmethod
    def _probe(logits: np.ndarray, probe: PromptProbe) -> list[float]:
        lp = log_softmax(np.asarray(logits, np.float32))
        return [float(np.exp(v)) for v in lp[:, probe.token]]

    def run(self, cross: dict, prompt: list[int], options: SearchOptions, limit: int,
            probe: PromptProbe | None = None, rng: np.random.Generator | None = None
            ) -> SearchResult:
        options.check()
        self.step_ms = []
        n = next(iter(cross.values())).shape[0]
        logits, past, probed = self.prefill(cross, prompt, probe, n)
        if options.beam_size > 1 and options.temperature == 0:
            group = options.beam_size
        elif options.temperature > 0:
            group = options.best_of
        else:
            group = 1
        if group > 1:  # every row of an input starts from the same prompt cache; the rows of
            # an input share its cross K/V (the decoder graph takes rows = inputs × group)
            rows = np.repeat(np.arange(n), group)
            past = self.take(past, rows)
            logits = np.asarray(logits)[rows]
        if options.beam_size > 1 and options.temperature == 0:
            hyps = self._beam(logits, past, cross, n, group, options, limit)
        else:
            hyps = self._sample(logits, past, cross, n, group, options, limit, rng)
        for h, p in zip(hyps, probed):
            h.probe = p
        return SearchResult(hyps, list(self.step_ms))

    # -- greedy and sampling --------------------------------------------------------------
    def _sample(self, logits, past, cross, n, group, options, limit, rng) -> list[Hypothesis]:
        eot = self.eot
        rows = n * group
        tokens = np.zeros((rows, 0), np.int64)
        sums = np.zeros(rows, np.float64)
        finished = np.zeros(rows, bool)
        if options.temperature > 0 and rng is None:
            rng = np.random.default_rng(0)
        for i in range(limit):
            if i > 0:
                logits, past = self._timed_step(tokens[:, -1:], past, cross)
            scores = apply_filters(self.filters, logits, i, tokens)
            if options.temperature > 0:   # Gumbel-max: a draw from softmax(scores / T)
                gumbel = -np.log(-np.log(rng.uniform(1e-20, 1.0, scores.shape)))
                nxt = np.argmax(scores / options.temperature + gumbel, axis=-1)
            else:
                nxt = np.argmax(scores, axis=-1)
            picked = scores[np.arange(rows), nxt]
            # argmax picks a NaN or +inf if there is one: checking the picks is enough
            if not np.isfinite(picked[~finished]).all():
                raise self._nan(i)
            lp = picked - logsumexp(scores)
            sums += np.where(finished, 0.0, lp)
            nxt = np.where(finished, eot, nxt).astype(np.int64)
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            finished |= nxt == eot
            if finished.all():
                break
        hyps = []
        for a in range(n):
            cands = []
            for r in range(a * group, (a + 1) * group):
                row = tokens[r].tolist()
                row = row[:row.index(eot)] if eot in row else row
                cands.append(Hypothesis(row, float(sums[r])))
            hyps.append(max(cands, key=lambda h: rank_score(h.sum_logprob, len(h.tokens),
                                                             options.length_penalty)))
        return hyps

    # -- beam search ----------------------------------------------------------------------
    def _beam(self, logits, past, cross, n, beam, options, limit) -> list[Hypothesis]:
        eot = self.eot
        max_finals = max(1, round(beam * options.patience))
        tokens = np.zeros((n * beam, 0), np.int64)
        sums = np.zeros(n * beam, np.float64)
        finals: list[dict[tuple, float]] = [{} for _ in range(n)]
        for i in range(limit):
            if i > 0:
                logits, past = self._timed_step(tokens[:, -1:], past, cross)
            scores = apply_filters(self.filters, logits, i, tokens)
            # the beam + 1 best tokens of every row, and only their log-probabilities (one
            # normaliser per row; no full-vocabulary log-softmax array)
            top = np.argpartition(-scores, beam, axis=-1)[:, :beam + 1]
            top_lp = log_softmax_at(scores, top)
            if np.isnan(top_lp).any() or np.isposinf(top_lp).any():
                raise self._nan(i)
            top, top_lp = top.tolist(), top_lp.tolist()
            step = _BeamStep()
            for a in range(n):
                cands, parent = _candidates(range(a * beam, (a + 1) * beam), tokens, sums, top,
                                            top_lp)
                fresh = step.keep(cands, parent, beam, eot, tuple(tokens[a * beam].tolist()),
                                  a * beam)
                for seq in sorted(fresh, key=fresh.get, reverse=True):
                    if len(finals[a]) >= max_finals:
                        break
                    finals[a][seq] = fresh[seq]
            tokens = np.array(step.rows, np.int64)
            sums = np.array(step.sums, np.float64)
            order = np.array(step.parents)
            if not np.array_equal(order, np.arange(len(order))):
                past = self.take(past, order)
            if all(len(f) >= max_finals for f in finals):
                break
        return [self._best(finals[a], tokens[a * beam:(a + 1) * beam],
                           sums[a * beam:(a + 1) * beam], beam, options.length_penalty)
                for a in range(n)]

    def _best(self, finals: dict, tokens, sums, beam: int, length_penalty) -> Hypothesis:
        """The best-ranked of an input's finished candidates (and, out of steps, its live
        beams)."""
        pool = dict(finals)
        if len(pool) < beam:  # out of steps: the live beams count too
            for r in np.argsort(-sums):
                seq = tuple(tokens[r].tolist())
                if np.isfinite(sums[r]):
                    pool.setdefault(seq, float(sums[r]))
                if len(pool) >= beam:
                    break
        best = max(pool, key=lambda s: rank_score(pool[s], len(_strip(s, self.eot)),
                                                  length_penalty))
        return Hypothesis(_strip(best, self.eot), pool[best])


def _candidates(rows, tokens, sums, top, top_lp) -> tuple[dict, dict]:
    """Every extension of an input's live beams by one of their top tokens: ({sequence: summed
    log-probability}, {sequence: the row it extends})."""
    cands: dict[tuple, float] = {}
    parent: dict[tuple, int] = {}
    for r in rows:
        if not np.isfinite(sums[r]):
            continue
        prefix = tuple(tokens[r].tolist())
        for t, lp in zip(top[r], top_lp[r]):
            if lp == -np.inf:
                continue
            seq = prefix + (t,)
            cands[seq] = sums[r] + lp
            parent[seq] = r
    return cands, parent


@dataclass
class _BeamStep:
    """The rows of the next step, input by input."""

    rows: list = field(default_factory=list)
    parents: list = field(default_factory=list)
    sums: list = field(default_factory=list)

    def keep(self, cands: dict, parent: dict, beam: int, eot: int, first: tuple,
             first_row: int) -> dict:
        """The ``beam`` best live candidates become rows (filled with rows that can never win
        when fewer are left); returns the candidates that ended (eot)."""
        kept = 0
        fresh: dict[tuple, float] = {}
        for seq in sorted(cands, key=cands.get, reverse=True):
            if seq[-1] == eot:
                fresh[seq] = cands[seq]
            else:
                self.rows.append(seq)
                self.parents.append(parent[seq])
                self.sums.append(cands[seq])
                kept += 1
                if kept == beam:
                    break
        filler = len(self.rows) - kept   # fewer live candidates than beams: fill
        for _ in range(beam - kept):     # with rows that can never win (sum -inf)
            self.rows.append(self.rows[filler] if kept else first + (eot,))
            self.parents.append(self.parents[filler] if kept else first_row)
            self.sums.append(-np.inf)
        return fresh


def _strip(seq: tuple, eot: int) -> list[int]:
    seq = list(seq)
    return seq[:seq.index(eot)] if eot in seq else seq
