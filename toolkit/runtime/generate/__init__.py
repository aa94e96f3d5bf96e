"""Generation written once for every encoder–decoder (and decoder-only) family.

``search.py``: the ``Searcher`` — greedy, sampling with best-of, beam search with patience and
length penalty — over a decoder-step callable; ``filters.py``: the logit rules it applies and
the log-probability arithmetic; ``pipeline.py``: the encode-once / step-with-a-cache / reorder
-per-beam base over two Sessions. Whisper, Marian and InternVL use them; their own rules
(Whisper's timestamp grammar, its no-speech probe) are filters and hooks, not special cases.
"""

from .filters import (
    NEG_INF,
    LogitFilter,
    SuppressAtBegin,
    SuppressTokens,
    TextOnly,
    apply_filters,
    log_softmax,
    log_softmax_at,
    logsumexp,
)
from .pipeline import CacheEntry, EncoderDecoder
from .search import Hypothesis, PromptProbe, Searcher, SearchOptions, SearchResult, rank_score

__all__ = ["NEG_INF", "LogitFilter", "SuppressAtBegin", "SuppressTokens", "TextOnly",
           "apply_filters", "log_softmax", "log_softmax_at", "logsumexp", "CacheEntry",
           "EncoderDecoder", "Hypothesis", "PromptProbe", "Searcher", "SearchOptions",
           "SearchResult", "rank_score"]
