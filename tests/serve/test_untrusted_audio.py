"""A client's file is decoded with FFmpeg held to audio demuxers and the file protocol: a
playlist cannot make it read other files or URLs, and a small file cannot decode to hours."""

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from toolkit.core.errors import ToolkitError
from toolkit.models.whisper.audio import SAMPLE_RATE, TooLong, load_audio

ASSETS = Path(__file__).resolve().parents[2] / "toolkit" / "assets" / "speech" / "wavs"


def test_a_playlist_is_not_followed(tmp_path):
    """FFmpeg's concat demuxer, probed from the content alone, would read another file of
    the upload directory (another client's upload) into this request's transcript."""
    sf.write(tmp_path / "upload-other", 0.3 * np.sin(np.arange(SAMPLE_RATE * 2) / 5.0),
             SAMPLE_RATE, format="WAV")
    playlist = tmp_path / "upload-abc"            # the server's names: no extension
    playlist.write_text("ffconcat version 1.0\nfile upload-other\n")
    assert len(load_audio(playlist)) == 2 * SAMPLE_RATE   # trusted (the CLI): followed
    with pytest.raises(ToolkitError, match="cannot decode"):
        load_audio(playlist, untrusted=True)


def test_compressed_audio_still_decodes_and_long_audio_stops_early(tmp_path):
    clip = load_audio(ASSETS / "LJ001-0004.flac")
    m4a = tmp_path / "upload-m4a"
    with av.open(str(m4a), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(clip[None, :].astype(np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    decoded = load_audio(m4a, untrusted=True, max_seconds=60)
    assert abs(len(decoded) - len(clip)) < 0.2 * SAMPLE_RATE     # AAC priming/padding
    with pytest.raises(TooLong):
        load_audio(m4a, untrusted=True, max_seconds=2.0)      # FFmpeg path, while decoding
    with pytest.raises(TooLong):
        load_audio(ASSETS / "LJ001-0004.flac", max_seconds=2.0)   # libsndfile, from its header
