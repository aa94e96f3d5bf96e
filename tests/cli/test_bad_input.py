"""Every bad input a user can give, through the console script: exit code 2, one `error:` line
naming the problem, no traceback, nothing on stdout, and nothing written."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from support.cli import fails_cleanly, run_toolkit


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("bad")
    jfk = shared_data / "audio" / "jfk.flac"
    sf.write(d / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    (d / "notaudio.mp3").write_text("hello")
    np.save(d / "nan.npy", np.full((80, 3000), np.nan, np.float32))
    np.save(d / "bins128.npy", np.zeros((128, 3000), np.float32))
    latin = d / "latin1"
    (latin / "wavs").mkdir(parents=True)
    (latin / "metadata.csv").write_bytes("LJ001-0002|caf\xe9|caf\xe9\n".encode("latin-1"))
    shutil.copy(shared_data / "ljspeech-mini" / "wavs" / "LJ001-0002.wav", latin / "wavs")
    video = shared_data / "video" / "demo.mp4"
    return {"dir": d, "jfk": jfk, "video": video, "latin": latin}


ROWS = [
    # (id, args, env, expected words in the error line)
    ("embed --frames 0", lambda f: ["embed", f["video"], "--preset", "tiny", "--frames", "0"],
     None, "--frames must be at least 1"),
    ("bench svt --frames 0", lambda f: ["bench", "--model", "svt", "--frames", "0"], None,
     "--frames must be at least 1"),
    ("train gradtts --save-every 0", lambda f: ["train", "gradtts", "--data", f["latin"],
                                                "--save-every", "0", "--out", f["dir"] / "g"],
     None, "--save-every must be at least 1"),
    ("train gradtts --batch-size 0", lambda f: ["train", "gradtts", "--data", f["latin"],
                                                "--batch-size", "0", "--out", f["dir"] / "g"],
     None, "--batch-size must be at least 1"),
    ("train svt --save-every 0", lambda f: ["train", "svt", "--data", f["dir"], "--preset", "tiny",
                                            "--save-every", "0", "--out", f["dir"] / "s"],
     None, "--save-every must be at least 1"),
    ("train svt --batch-size 0", lambda f: ["train", "svt", "--data", f["dir"], "--preset", "tiny",
                                            "--batch-size", "0", "--out", f["dir"] / "s"],
     None, "--batch-size must be at least 1"),
    ("bench --limit 0", lambda f: ["bench", "--limit", "0"], None, "--limit must be at least 1"),
    ("bench --limit -1", lambda f: ["bench", "--limit", "-1"], None, "--limit must be at least 1"),
    ("bench --warmup -1", lambda f: ["bench", "--warmup", "-1"], None, "--warmup must be 0 or more"),
    ("bench --runs 0", lambda f: ["bench", "--runs", "0"], None, "--runs must be at least 1"),
    ("bench --tokens 1000", lambda f: ["bench", "--tokens", "1000"], None,
     "--tokens 1000 is more than this model decodes in one window"),
    ("TOOLKIT_THREADS=abc", lambda f: ["transcribe", f["jfk"], "--preset", "tiny", "--backend",
                                       "torch"], {"TOOLKIT_THREADS": "abc"},
     "TOOLKIT_THREADS must be a whole number"),
    ("metadata.csv not UTF-8 (gradtts)", lambda f: ["train", "gradtts", "--data", f["latin"],
                                                     "--out", f["dir"] / "g2"], None,
     "is not UTF-8"),
    ("metadata.csv not UTF-8 (whisper)", lambda f: ["bench", "--data", f["latin"]], None,
     "is not UTF-8"),
    ("synthesize 100 000 characters", lambda f: ["synthesize", "a" * 100_000, "--preset", "tiny",
                                                 "--out", f["dir"] / "long.wav"], None,
     "split it into sentences"),
    ("unknown model", lambda f: ["bench", "--model", "llama"], None, "unknown model 'llama'"),
    ("unknown backend", lambda f: ["transcribe", f["jfk"], "--backend", "tpu"], None,
     "unknown backend 'tpu'"),
    ("unknown precision", lambda f: ["bench", "--precision", "int3"], None,
     "unknown precision 'int3'"),
    ("int4 on a family without it", lambda f: ["bench", "--precision", "int4"], None,
     "whisper does not offer --precision int4; only internvl does"),
    ("missing audio", lambda f: ["transcribe", f["dir"] / "nope.wav", "--preset", "tiny",
                                 "--backend", "torch"], None, "does not exist"),
    ("silent audio", lambda f: ["transcribe", f["dir"] / "silent.wav", "--preset", "tiny",
                                "--backend", "torch"], None, "is silent"),
    ("NaN audio", lambda f: ["transcribe", f["dir"] / "nan.wav", "--preset", "tiny", "--backend",
                             "torch"], None, "NaN or infinite samples"),
    ("not audio", lambda f: ["transcribe", f["dir"] / "notaudio.mp3", "--preset", "tiny",
                             "--backend", "torch"], None, "cannot decode"),
    ("NaN features", lambda f: ["transcribe", f["dir"] / "nan.npy", "--preset", "tiny",
                                "--backend", "torch"], None, "NaN or infinite values"),
    ("wrong mel bins", lambda f: ["transcribe", f["dir"] / "bins128.npy", "--preset", "tiny",
                                  "--backend", "torch"], None,
     "128 mel bins but this model expects 80"),
    ("rich markup in user text", lambda f: ["export", "[/x]"], None, "unknown model '[/x]'"),
    ("--steps for whisper", lambda f: ["bench", "--steps", "10"], None,
     "--steps does not apply to whisper; it applies to gradtts"),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(files, row, tmp_path):
    _, args, env, expected = row
    before = sorted(p.name for p in files["dir"].iterdir())
    fails_cleanly(*args(files), contains=expected, env=env, cwd=tmp_path)
    assert sorted(p.name for p in files["dir"].iterdir()) == before  # nothing written there
    assert list(tmp_path.iterdir()) == []                            # nor in the working dir


def test_max_new_tokens_cap_is_said(files, tmp_path):
    r = run_toolkit("transcribe", files["jfk"], "--preset", "tiny", "--backend", "torch",
                    "--max-new-tokens", "448", "--language", "en", "--beam-size", "1",
                    "--temperature-increment-on-fallback", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # 448 positions less <|startoftranscript|><|en|><|transcribe|> (timestamps on)
    assert "--max-new-tokens 448 is capped at 445" in r.stderr


def _artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "svt"
    r = run_toolkit("export", "svt", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, shared_data):
    return _artifact(tmp_path_factory)


def _edited(artifact, tmp_path, edit):
    bad = tmp_path / "edited"
    shutil.copytree(artifact, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    return bad


@pytest.mark.parametrize("what, edit, expected", [
    ("graph file with ..", lambda m: m["graphs"]["backbone"].update(file="../backbone.onnx"),
     "not a plain file name inside the artifact"),
    ("absolute graph path", lambda m: m["graphs"]["backbone"].update(file="/etc/passwd"),
     "not a plain file name inside the artifact"),
    ("graph name with ../", lambda m: m["graphs"].update({"../evil": m["graphs"].pop("backbone")}),
     "not a plain file name inside the artifact"),
    ("missing sha256", lambda m: m["graphs"]["backbone"].pop("sha256"), "records no sha256"),
    ("precision label", lambda m: m.update(precision="int8"), "says int8, but graph backbone"),
])
def test_manifest_that_points_outside_or_lies_is_refused(artifact, tmp_path, shared_data, what,
                                                         edit, expected):
    bad = _edited(artifact, tmp_path, edit)
    fails_cleanly("embed", shared_data / "video" / "demo.mp4", "--artifact", bad, "--backend",
                  "ort", "--size", "64", contains=expected)


def test_export_refuses_a_directory_of_user_files(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    fails_cleanly("export", "svt", "--preset", "tiny", "--out", keep, contains="--force")
    assert (keep / "notes.txt").read_text() == "mine" and sorted(keep.iterdir()) == [
        keep / "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]   # no partial, no lock left over?
