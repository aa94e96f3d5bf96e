"""The encoder–decoder loop over two Sessions, written once: encode each input once, step the
decoder with its cache, reorder the cache per beam, batch rows.

A family's pipeline subclasses ``EncoderDecoder`` and says three things: which cache the
decoder graph carries (``cache``: the ``past_*`` inputs, each fed back from the ``present_*``
output of the same suffix — self-attention K/V growing on a time axis, or a fixed recurrent
state), how its inputs become encoder feeds, and its prompt and logit rules. The graphs'
contract (written by ``export/generate.py``): the decoder takes ``input_ids`` [rows, T], every
``past_*`` [rows, …] and every encoder output [inputs, …] with rows = inputs × group, and returns
``logits`` [rows, vocab] of its last position and every ``present_*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..session import Session
from .filters import LogitFilter
from .search import PromptProbe, Searcher, SearchOptions, SearchResult


@dataclass(frozen=True)
class CacheEntry:
    """One ``past_<name>`` input: its shape after the row axis (0 on a time axis that grows:
    an empty cache), and its element type."""

    name: str
    shape: tuple
    dtype: str = "float32"

    @property
    def past(self) -> str:
        return f"past_{self.name}"

    @property
    def present(self) -> str:
        return f"present_{self.name}"


def kv_cache(layers: int, heads: int, head_dim: int) -> list[CacheEntry]:
    """Self-attention keys and values per layer, [rows, heads, time, head_dim], time from 0."""
    return [CacheEntry(f"{kv}_{i}", (heads, 0, head_dim)) for i in range(layers)
            for kv in ("key", "value")]


class EncoderDecoder:
    """``encode`` / ``empty_cache`` / ``step`` / ``take`` / ``search`` over an encoder and a
    cached decoder Session, on any backend."""

    def __init__(self, encoder: Session, decoder: Session, cache: Sequence[CacheEntry],
                 backend: str, precision: str):
        self.encoder = encoder
        self.decoder = decoder
        self.cache = list(cache)
        self.backend = backend
        self.precision = precision

    @property
    def sessions(self) -> list[Session]:
        return [self.encoder, self.decoder]

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

    def run_encoder(self, feeds: dict[str, np.ndarray]) -> dict:
        """The encoder's outputs (the decoder's cross inputs). On a backend with device memory
        (trt) they stay there (valid until the next-but-one encode); elsewhere host arrays."""
        return self.encoder.run_device(feeds)

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        return {c.past: np.zeros((batch, *c.shape), c.dtype) for c in self.cache}

    def step(self, ids: np.ndarray, past: dict, cross: dict) -> tuple[np.ndarray, dict]:
        """One decoder call: (logits on the host, the new cache to feed back as ``past``).

        The cache stays where the backend keeps it (device memory on trt: only the logits are
        copied to the host each step); ``past``/``cross`` are what earlier calls returned.
        """
        out = self.decoder.run_device({"input_ids": ids, **past, **cross})
        logits = self.decoder.to_host(out["logits"])
        return logits, {c.past: out[c.present] for c in self.cache}

    def take(self, arrays: dict, rows: np.ndarray) -> dict:
        """Rows ``rows`` of each batch-first array (beams: repeat and reorder the caches). A
        device-resident array (trt) makes a round trip through the host."""
        out = {}
        for k, v in arrays.items():
            host = v if isinstance(v, np.ndarray) else self.decoder.to_host(v)
            out[k] = np.ascontiguousarray(host[rows])
        return out

    def searcher(self, eot: int, filters: Sequence[LogitFilter],
                 stop: Callable[[], bool] | None = None) -> Searcher:
        return Searcher(self.step, self.take, self.empty_cache, eot, filters,
                        backend=f"{self.backend} {self.precision}", stop=stop)

    def generate(self, cross: dict, prompt: list[int], eot: int,  # noqa: PLR0913
                 filters: Sequence[LogitFilter], options: SearchOptions, limit: int,
                 probe: PromptProbe | None = None, rng: np.random.Generator | None = None,
                 stop: Callable[[], bool] | None = None) -> SearchResult:
        """Decode a batch of encoded inputs sharing ``prompt``: greedy, sampling or beam."""
        return self.searcher(eot, filters, stop).run(cross, prompt, options, limit,
                                                     probe=probe, rng=rng)
