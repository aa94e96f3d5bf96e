"""Decoded samples are written into one array: the result equals the blocks joined, an
announced length means no reallocation, and nothing decodes to an |audio| copy."""

import numpy as np
import soundfile as sf

from toolkit.core.audio import _Samples, load_audio


def test_samples_equal_the_blocks_joined_with_or_without_a_size_hint():
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal(int(n)).astype(np.float32)
              for n in rng.integers(1, 50_000, size=40)]
    joined = np.concatenate(blocks)
    for hint in (0, 1000, len(joined), len(joined) + 7):
        out = _Samples(hint)
        first = out.data
        for b in blocks:
            out.add(b)
        got = out.result()
        np.testing.assert_array_equal(got, joined)
        if hint >= len(joined):          # announced: written in place, never grown
            assert out.data is first and np.shares_memory(got, first)


def test_a_long_file_decodes_to_one_copy(tmp_path):
    """10 min at 48 kHz → 16 kHz: the decoded array is the only large allocation kept, and it
    is not a view into a much larger buffer."""
    path = tmp_path / "long.flac"
    t = np.arange(48_000 * 600) / 48_000
    sf.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 48_000)
    audio = load_audio(path, 16_000)
    assert abs(len(audio) - 16_000 * 600) <= 16
    base = audio.base if audio.base is not None else audio
    assert base.nbytes <= audio.nbytes / 0.9 + 4
