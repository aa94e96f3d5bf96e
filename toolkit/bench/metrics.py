"""Quality metrics: WER and CER as the field computes them, token exact-match.

Scores follow the Whisper paper and the Open ASR Leaderboard: both texts go through Whisper's
normaliser — ``EnglishTextNormalizer`` for English (spelled-out numbers to digits, British to
American spellings, contractions expanded, fillers and bracketed text dropped, punctuation
removed), ``BasicTextNormalizer`` for other languages (lower case, symbols and punctuation
removed) — and ``jiwer`` aligns them (Levenshtein over words or characters, corpus-level:
edits summed over every utterance, divided by the reference's words or characters). Every
score also comes *raw* (the texts as written: case and punctuation count), so a figure can be
compared both with published ones and with what a user reads.

The normalisers are OpenAI Whisper's, from the ``whisper-normalizer`` package (pinned in the
``export`` extra): ``openai-whisper`` itself would bring PyTorch's triton and numba and imports
PyTorch with its normalisers; transformers' copy needs the spelling map of a model on the hub.
``whisper-normalizer`` from 0.1.12 adds four informal-word rules of its own ("kinda",
"sorta", "dunno", "cause" → "because") on top of OpenAI's rules; they are taken out again, so
the English rules are exactly openai-whisper 20250625's (its numbers, spelling map and
contractions, which the package carries unchanged).

Korean is scored the way its field reports it as well: CER over the characters with all
whitespace removed (``cer_nospace``; Korean spacing is inconsistent, so spaces are not
counted as characters either way).
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Sequence

from ..core.errors import MissingDependency

# the four replacements whisper-normalizer (0.1.12 on) adds to OpenAI's EnglishTextNormalizer
NOT_OPENAI_RULES = (r"\bkinda\b", r"\bsorta\b", r"\bdunno\b", r"\bcause\b")
NOSPACE_CER_LANGUAGES = ("ko",)   # languages whose records carry cer_nospace


def _missing(what: str) -> MissingDependency:
    return MissingDependency(f"scoring transcripts needs {what}, which is not installed; "
                             "pip install 'toolkit[export]'")


def _jiwer():
    try:
        import jiwer
    except ImportError:
        raise _missing("jiwer") from None
    return jiwer


def is_english(language: str | None) -> bool:
    """English-only models and ``--language en`` (None = an English-only model's default)."""
    return language in (None, "en", "english")


def normalizer_name(language: str | None) -> str:
    return "whisper-english" if is_english(language) else "whisper-basic"


@functools.lru_cache(maxsize=None)
def normalizer(language: str | None = "en") -> Callable[[str], str]:
    """Whisper's text normaliser for ``language``: English or basic (every other language)."""
    try:
        from whisper_normalizer.basic import BasicTextNormalizer
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError:
        raise _missing("whisper-normalizer") from None
    if not is_english(language):
        return BasicTextNormalizer()
    norm = EnglishTextNormalizer()
    for rule in NOT_OPENAI_RULES:
        norm.replacers.pop(rule, None)
    return norm


def normalize(text: str, language: str | None = "en") -> str:
    """``text`` as it is scored: Whisper's normaliser, whitespace collapsed."""
    return re.sub(r"\s+", " ", normalizer(language)(text)).strip()


def _prepared(texts: Sequence[str], language: str | None, normalized: bool) -> list[str]:
    if normalized:
        return [normalize(t, language) for t in texts]
    return [re.sub(r"\s+", " ", t).strip() for t in texts]


def word_errors(hyps: Sequence[str], refs: Sequence[str], language: str | None = "en",
                normalized: bool = True) -> dict:
    """Corpus word alignment (jiwer): substitutions, words dropped (in the reference, missing
    from the hypothesis), words inserted, the reference's word count, and ``wer`` in percentage
    points (None without reference words)."""
    _check_pairs(hyps, refs)
    h, r = _prepared(hyps, language, normalized), _prepared(refs, language, normalized)
    out = _jiwer().process_words(r, h)
    n = out.hits + out.substitutions + out.deletions
    edits = out.substitutions + out.deletions + out.insertions
    return {"substitutions": out.substitutions, "deleted": out.deletions,
            "inserted": out.insertions, "ref_words": n,
            "wer": 100.0 * edits / n if n else None}


def char_error_rate(hyps: Sequence[str], refs: Sequence[str], language: str | None = "en",
                    normalized: bool = True, spaces: bool = True) -> float | None:
    """Corpus CER (jiwer) in percentage points: character edits over reference characters
    (None when the references hold no characters: nothing to measure against). ``spaces=False``
    removes all whitespace first (``cer_nospace``)."""
    _check_pairs(hyps, refs)
    h, r = _prepared(hyps, language, normalized), _prepared(refs, language, normalized)
    if not spaces:
        h, r = [re.sub(r"\s+", "", t) for t in h], [re.sub(r"\s+", "", t) for t in r]
    if not any(r):
        return None
    out = _jiwer().process_characters(r, h)
    chars = out.hits + out.substitutions + out.deletions
    return 100.0 * (out.substitutions + out.deletions + out.insertions) / chars


def scores(hyps: Sequence[str], refs: Sequence[str], language: str | None = "en") -> dict:
    """Every figure a record keeps: normalised ``wer``/``cer`` (and the alignment's counts),
    ``wer_raw``/``cer_raw`` on the texts as written, the normaliser's name, and ``cer_nospace``
    for the languages that report it (None elsewhere)."""
    words = word_errors(hyps, refs, language)
    return {**words, "cer": char_error_rate(hyps, refs, language),
            "wer_raw": word_errors(hyps, refs, language, normalized=False)["wer"],
            "cer_raw": char_error_rate(hyps, refs, language, normalized=False),
            "cer_nospace": char_error_rate(hyps, refs, language, spaces=False)
            if language in NOSPACE_CER_LANGUAGES else None,
            "normalizer": normalizer_name(language)}


class RunningScores:
    """The corpus figures of ``scores`` built one pair of texts at a time, keeping only counts:
    jiwer's corpus figures are sums over the pairs (each pair aligned on its own), so adding the
    pairs' edits and reference lengths gives exactly ``scores(hyps, refs)`` without holding the
    transcripts. ``counts`` is a flat list of integers (``FIELDS``), so counts made in several
    processes are summed element-wise and read back with ``from_counts``."""

    FIELDS = ("substitutions", "deleted", "inserted", "ref_words", "word_edits_raw",
              "ref_words_raw", "char_edits", "ref_chars", "char_edits_raw", "ref_chars_raw",
              "char_edits_nospace", "ref_chars_nospace", "pairs")

    def __init__(self, language: str | None = "en"):
        self.language = language
        self.counts = [0] * len(self.FIELDS)

    @classmethod
    def from_counts(cls, counts, language: str | None = "en") -> "RunningScores":
        got = cls(language)
        got.counts = [int(round(float(c))) for c in counts]
        if len(got.counts) != len(cls.FIELDS):
            raise ValueError(f"{len(got.counts)} counts for {len(cls.FIELDS)} fields")
        return got

    def add(self, hyp: str, ref: str) -> None:
        jiwer, lang = _jiwer(), self.language
        (h, r), (hr, rr) = _prepared([hyp, ref], lang, True), _prepared([hyp, ref], lang, False)
        words = jiwer.process_words([r], [h])
        raw_words = jiwer.process_words([rr], [hr])
        row = [words.substitutions, words.deletions, words.insertions,
               words.hits + words.substitutions + words.deletions,
               raw_words.substitutions + raw_words.deletions + raw_words.insertions,
               raw_words.hits + raw_words.substitutions + raw_words.deletions]
        pairs = [(h, r), (hr, rr)]
        if lang in NOSPACE_CER_LANGUAGES:
            pairs.append((re.sub(r"\s+", "", h), re.sub(r"\s+", "", r)))
        for hh, ref_ in pairs:
            if ref_:
                c = jiwer.process_characters([ref_], [hh])
                row += [c.substitutions + c.deletions + c.insertions,
                        c.hits + c.substitutions + c.deletions]
            else:          # no reference characters: the hypothesis's are insertions
                row += [len(hh), 0]
        row += [0, 0] * (3 - len(pairs))
        self.counts = [a + b for a, b in zip(self.counts, row + [1])]

    def result(self) -> dict:
        """What ``scores`` returns for the pairs added so far."""
        c = dict(zip(self.FIELDS, self.counts))

        def rate(edits: int, n: int) -> float | None:
            return 100.0 * edits / n if n else None

        n = c["ref_words"]
        return {"substitutions": c["substitutions"], "deleted": c["deleted"],
                "inserted": c["inserted"], "ref_words": n,
                "wer": rate(c["substitutions"] + c["deleted"] + c["inserted"], n),
                "cer": rate(c["char_edits"], c["ref_chars"]),
                "wer_raw": rate(c["word_edits_raw"], c["ref_words_raw"]),
                "cer_raw": rate(c["char_edits_raw"], c["ref_chars_raw"]),
                "cer_nospace": rate(c["char_edits_nospace"], c["ref_chars_nospace"])
                if self.language in NOSPACE_CER_LANGUAGES else None,
                "normalizer": normalizer_name(self.language)}


def corpus_cer(hyps: Sequence[str], refs: Sequence[str], language: str | None = "en"
               ) -> float | None:
    """Normalised corpus CER in percentage points (None without reference characters)."""
    return char_error_rate(hyps, refs, language)


def corpus_wer(hyps: Sequence[str], refs: Sequence[str], language: str | None = "en"
               ) -> float | None:
    """Normalised corpus WER in percentage points (None without reference words)."""
    return word_errors(hyps, refs, language)["wer"]


def _check_pairs(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} transcripts for {len(refs)} references")


def token_exact_match(hyps: Sequence[Sequence[int]],
                      refs: Sequence[Sequence[int]]) -> float | None:
    """Share of sequences whose tokens equal the reference exactly (0..1); None when the
    reference has no tokens at all (an empty transcript matches anything: n/a, not 1.0)."""
    if not any(len(r) for r in refs):
        return None
    return sum(list(h) == list(r) for h, r in zip(hyps, refs)) / len(refs)
