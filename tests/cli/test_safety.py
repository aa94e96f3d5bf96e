"""Safety end to end: a crafted pickle in a training directory is not executed; two exports
into one directory leave one valid artifact; long audio goes through the encoder in bounded
batches."""

import pickle
import shutil
import subprocess

import numpy as np
import pytest

from support.cli import SCRIPT, fails_cleanly, run_toolkit
from support.zoo import tiny
from toolkit import registry
from toolkit.export.manifest import load_manifest
from toolkit.runtime.whisper.pipeline import WINDOWS_PER_BATCH


class Payload:
    """Unpickling this runs ``touch MARKER`` — what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


@pytest.fixture
def ljspeech(shared_data, tmp_path):
    data = tmp_path / "lj"
    (data / "wavs").mkdir(parents=True)
    rows = (shared_data / "ljspeech-mini" / "metadata.csv").read_text().splitlines()[:2]
    for row in rows:
        uid = row.split("|")[0]
        shutil.copy(shared_data / "ljspeech-mini" / "wavs" / f"{uid}.wav", data / "wavs")
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    return data


def test_crafted_gradtts_training_state_is_not_executed(ljspeech, tmp_path):
    out = tmp_path / "ck"
    r = run_toolkit("train", "gradtts", "--data", ljspeech, "--out", out, "--steps", "1",
                    "--batch-size", "1")
    assert r.returncode == 0, r.stderr
    marker = tmp_path / "pwned"
    (out / "train.pt").write_bytes(pickle.dumps({"optimizer": Payload(marker)}))
    fails_cleanly("train", "gradtts", "--data", ljspeech, "--out", out, "--steps", "2",
                  contains="torch refused to unpickle it")
    assert not marker.exists()


def test_crafted_svt_training_state_is_not_executed(tmp_path):
    from toolkit.models.svt.video import write_synthetic_clip

    clips = tmp_path / "clips"
    clips.mkdir()
    write_synthetic_clip(clips / "a.mp4", n_frames=16, size=48, seed=1)
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    (out / "train_state.pt").write_bytes(pickle.dumps({"student": Payload(marker)}))
    fails_cleanly("train", "svt", "--data", clips, "--preset", "tiny", "--steps", "2", "--out",
                  out, contains="torch refused to unpickle it")
    assert not marker.exists()


def test_two_concurrent_exports_leave_one_valid_artifact(tmp_path, shared_data):
    out = tmp_path / "art"
    cmd = [str(SCRIPT), "export", "svt", "--preset", "tiny", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    m = load_manifest(out, family="svt")            # hashes verified
    assert set(m["graphs"]) == {"backbone"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no partial, old or lock


def test_long_audio_is_encoded_in_bounded_batches():
    pipe = registry.get("whisper").open_pipeline(loaded=tiny("whisper"), backend="torch")
    seen = []
    run = pipe.encoder.run_device

    def spy(feeds):
        seen.append(feeds["input_features"].shape[0])
        return run(feeds)

    pipe.encoder.run_device = spy
    windows = 2 * WINDOWS_PER_BATCH + 3           # 9.5 minutes of audio
    feats = np.zeros((windows, 80, 3000), np.float32)
    res = pipe.decode_features(feats, [50258, 50259, 50359, 50363], max_new_tokens=1,
                               force_length=True)
    assert seen == [WINDOWS_PER_BATCH, WINDOWS_PER_BATCH, 3]
    assert len(res.tokens) == windows and all(len(t) == 1 for t in res.tokens)
