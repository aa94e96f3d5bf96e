"""The Grad-TTS commands through Typer's CliRunner (tiny preset, few steps)."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from support.cli import fails_cleanly
from toolkit.bench.records import COMMON_FIELDS as REQUIRED
from toolkit.cli import app

runner = CliRunner()


def test_synthesize_writes_mel_and_wav(tmp_path):
    out = tmp_path / "o" / "hi.wav"
    r = runner.invoke(app, ["synthesize", "Hello, world!", "--preset", "tiny", "--steps", "2",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    mel = np.load(out.with_suffix(".npy"))
    wav, sr = sf.read(str(out))
    assert mel.shape[0] == 80 and sr == 22050
    assert abs(len(wav) - mel.shape[1] * 256) <= 256
    assert "griffin-lim" in r.output


def test_synthesize_bad_input(tmp_path):
    for args, msg in [(["hi", "--steps", "0"], "at least 1"), (["  "], "empty"),
                      (["%%% 42"], "speakable")]:
        fails_cleanly("synthesize", *args, "--preset", "tiny", "--out", tmp_path / "x.wav",
                      contains=msg)
    other = tmp_path / "ck"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    fails_cleanly("synthesize", "hi", "--checkpoint", other, "--out", tmp_path / "x.wav",
                  contains="another model")
    assert not (tmp_path / "x.wav").exists()


def test_train_errors_and_resume(tmp_path, shared_data):
    r = runner.invoke(app, ["train", "gradtts", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "metadata.csv" in r.output
    data = tmp_path / "d"
    (data / "wavs").mkdir(parents=True)
    for uid in ("LJ001-0002", "LJ001-0012"):
        shutil.copy(shared_data / "ljspeech-mini" / "wavs" / f"{uid}.wav", data / "wavs")
    meta = [line for line in (shared_data / "ljspeech-mini" / "metadata.csv").read_text()
            .splitlines() if line.split("|")[0] in ("LJ001-0002", "LJ001-0012")]
    (data / "metadata.csv").write_text("\n".join(meta) + "\n")
    ck = tmp_path / "ck"
    r = runner.invoke(app, ["train", "gradtts", "--data", str(data), "--steps", "2", "--out",
                            str(ck), "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((ck / "config.json").read_text())["step"] == 2
    r = runner.invoke(app, ["train", "gradtts", "--data", str(data), "--steps", "3", "--out",
                            str(ck), "--batch-size", "2"])
    assert r.exit_code == 0 and "resuming" in r.output, r.output
    assert json.loads((ck / "config.json").read_text())["step"] == 3
    assert len((ck / "train_log.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_bench_writes_records(tmp_path):
    out = tmp_path / "b.json"
    r = runner.invoke(app, ["bench", "--model", "gradtts", "--preset", "tiny", "--steps", "1,2",
                            "--backend", "torch,ort", "--precision", "fp32", "--runs", "1",
                            "--warmup", "0", "--limit", "1", "--workdir", str(tmp_path / "w"),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    recs = json.loads(out.read_text())
    assert {(x["backend"], x["steps"]) for x in recs} == {("torch", 1), ("torch", 2),
                                                          ("ort", 1), ("ort", 2)}
    for x in recs:
        assert all(k in x for k in REQUIRED)
        assert x["random_init"] is True and x["rtf"] > 0 and x["step_share_of_peak"] > 0
        if x["backend"] == "ort":
            assert x["quality_value"] < 1e-3
            assert 0 <= x["spectral_distortion_db"] < 0.01  # fp32 ORT: same mel to ~1e-6
        else:
            assert x["spectral_distortion_db"] == 0.0
    assert "RANDOM INIT" in r.output
    fails_cleanly("bench", "--model", "gradtts", "--steps", "0", contains="at least 1")
    fails_cleanly("bench", "--model", "gradtts", "--frames", "8", contains="applies to svt")


def test_spectral_distortion_db():
    import numpy as np

    from toolkit.bench.gradtts import spectral_distortion_db

    ref = np.zeros((80, 10))
    assert spectral_distortion_db(ref, ref) == 0.0
    # a uniform gain of 2 (ln 2 in natural-log mel) is 20·log10(2) = 6.02 dB in every bin
    assert abs(spectral_distortion_db(ref + np.log(2.0), ref) - 6.0206) < 1e-3
