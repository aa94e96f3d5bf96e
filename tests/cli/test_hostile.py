"""What a hostile user tried (issue 23), each through the console script: nothing of theirs is
deleted, nothing outside an artifact is read, and every bad input is one line."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from support.cli import SCRIPT, fails_cleanly, run_toolkit


@pytest.fixture(scope="module")
def whisper_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "tiny"
    r = run_toolkit("export", "whisper", "--preset", "tiny", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


# -- 1. --force never deletes a directory holding $HOME or the working directory ----------------

@pytest.mark.parametrize("via_link", [False, True])
def test_force_never_replaces_a_directory_holding_home(tmp_path, via_link):
    home = tmp_path / "x" / "home"
    thesis = home / "user" / "docs" / "thesis.txt"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("four years")
    out = home
    if via_link:
        out = tmp_path / "link"
        out.symlink_to(home)
    err = fails_cleanly("export", "whisper", "--preset", "tiny", "--out", out, "--force",
                        env={"HOME": str(home / "user")}, cwd=tmp_path,
                        contains="is or contains the home directory")
    assert "--force or not" in err
    assert thesis.read_text() == "four years"


def test_force_never_replaces_a_directory_holding_the_working_directory(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    for out in (tmp_path / "a", work, "."):
        fails_cleanly("export", "svt", "--preset", "tiny", "--out", out, "--force", cwd=work,
                      contains="is or contains the working directory")
    assert (work / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


# -- 2. symbolic links inside an artifact are refused -------------------------------------------

def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("target", ["other artifact", "/etc/passwd"])
def test_symlinked_graph_is_refused(whisper_artifact, tmp_path, shared_data, target):
    bad = tmp_path / "linked"
    shutil.copytree(whisper_artifact, bad)
    real = (whisper_artifact / "encoder.onnx" if target == "other artifact"
            else "/etc/passwd")
    (bad / "encoder.onnx").unlink()
    (bad / "encoder.onnx").symlink_to(real)
    m = json.loads((bad / "manifest.json").read_text())
    m["graphs"]["encoder"]["sha256"] = _sha(real)   # the attacker records the right hash
    (bad / "manifest.json").write_text(json.dumps(m))
    fails_cleanly("transcribe", shared_data / "audio" / "jfk.flac", "--artifact", bad,
                  contains="is a symbolic link", cwd=tmp_path)


def test_symlinked_tokenizer_file_and_manifest_are_refused(tmp_path, shared_data):
    # the default model's artifact carries its tokenizer folder
    art = tmp_path / "art"
    r = run_toolkit("export", "whisper", "--out", art, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = json.loads((art / "manifest.json").read_text())
    tok = next(n for n in m["extra_files"] if "/" in n)
    bad = tmp_path / "tok"
    shutil.copytree(art, bad)
    (bad / tok).unlink()
    os.symlink(art / tok, bad / tok)
    jfk = shared_data / "audio" / "jfk.flac"
    fails_cleanly("transcribe", jfk, "--artifact", bad, contains="is a symbolic link",
                  cwd=tmp_path)
    bad2 = tmp_path / "man"
    shutil.copytree(art, bad2)
    (bad2 / "manifest.json").unlink()
    os.symlink(art / "manifest.json", bad2 / "manifest.json")
    fails_cleanly("transcribe", jfk, "--artifact", bad2, contains="is a symbolic link",
                  cwd=tmp_path)


# -- 3. outputs: a regular file of the same name is replaced (documented), nothing else -----

def test_transcribe_replaces_regular_outputs_only(tmp_path, whisper_artifact, shared_data):
    jfk = shared_data / "audio" / "jfk.flac"
    out = tmp_path / "subs"
    out.mkdir()
    (out / "jfk.txt").write_text("old")
    elsewhere = tmp_path / "precious.json"
    elsewhere.write_text("keep me")
    (out / "jfk.json").symlink_to(elsewhere)
    fails_cleanly("transcribe", jfk, "--artifact", whisper_artifact, "--output-dir", out,
                  "--output-format", "txt,json", contains="is a symbolic link", cwd=tmp_path)
    assert elsewhere.read_text() == "keep me" and (out / "jfk.txt").read_text() == "old"
    (out / "jfk.json").unlink()
    (out / "jfk.json").mkdir()
    fails_cleanly("transcribe", jfk, "--artifact", whisper_artifact, "--output-dir", out,
                  "--output-format", "json", contains="is a directory", cwd=tmp_path)
    (out / "jfk.json").rmdir()
    r = run_toolkit("transcribe", jfk, "--artifact", whisper_artifact, "--output-dir", out,
                    "--output-format", "txt", "--beam-size", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "jfk.txt").read_text() != "old"          # replaced, as openai-whisper does
    assert sorted(p.name for p in out.iterdir()) == ["jfk.txt"]   # no temporary left


def test_bench_refuses_a_non_regular_output_before_running(tmp_path):
    (tmp_path / "b.png").mkdir()
    fails_cleanly("bench", "--model", "svt", "--preset", "tiny", "--out", tmp_path / "b.json",
                  contains="b.png is a directory", cwd=tmp_path)
    assert not (tmp_path / "artifacts").exists()              # refused before any export


# -- 9. names longer than the file system allows; 10. a write refused by the file system ----

def test_long_audio_names(tmp_path, whisper_artifact, shared_data):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    ok = tmp_path / ("a" * (limit - 10) + ".flac")         # its .txt still fits
    shutil.copy(shared_data / "audio" / "jfk.flac", ok)
    r = run_toolkit("transcribe", ok, "--artifact", whisper_artifact, "--output-format", "txt",
                    "--output-dir", tmp_path / "o", "--beam-size", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / (ok.stem + ".txt")).is_file()
    long = tmp_path / ("b" * (limit - 4) + ".wav")         # its .json would not fit
    shutil.copy(shared_data / "audio" / "jfk.flac", long)
    err = fails_cleanly("transcribe", long, "--artifact", whisper_artifact, "--output-format",
                        "json", "--output-dir", tmp_path / "o2", contains="the file system "
                        "allows", cwd=tmp_path)
    assert "rename the input" in err
    assert not (tmp_path / "o2").exists()


def test_file_size_limit_is_one_line(tmp_path, whisper_artifact, shared_data):
    import resource

    def no_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    cmd = [str(SCRIPT), "transcribe", str(shared_data / "audio" / "jfk.flac"), "--artifact",
           str(whisper_artifact), "--output-dir", str(tmp_path / "d"), "--output-format", "txt",
           "--beam-size", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, preexec_fn=no_files,
                       timeout=600)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "file-size limit" in errors[0], r.stderr
    assert [p.name for p in (tmp_path / "d").iterdir()] == []        # nothing half-written


# -- 11. an edited manifest is refused before anything runs ---------------------------------

EDITS = [
    ("no precision", lambda m: m.pop("precision"), "has no 'precision'"),
    ("precision 5", lambda m: m.update(precision=5), "'precision' is 5 (int), not a str"),
    ("decoder_layers 99", lambda m: m["model_config"].update(decoder_layers=99),
     "says 99 decoder layers, the decoder graph has 4"),
    ("heads 'six'", lambda m: m["model_config"].update(decoder_attention_heads="six"),
     "'decoder_attention_heads' is 'six' (str), not an int"),
    ("num_mel_bins 128", lambda m: m["model_config"].update(num_mel_bins=128),
     "says 128 mel bins, the encoder graph takes 80"),
    ("num_mel_bins '80'", lambda m: m["model_config"].update(num_mel_bins="80"),
     "'num_mel_bins' is '80' (str), not an int"),
    ("suppress_tokens", lambda m: m["model_config"]["generation"].update(suppress_tokens=[-1]),
     "must list token ids"),
]


@pytest.mark.parametrize("what, edit, expected", EDITS, ids=[e[0] for e in EDITS])
def test_edited_manifest_is_refused_in_one_line(whisper_artifact, tmp_path, shared_data, what,
                                                edit, expected):
    bad = tmp_path / "edited"
    shutil.copytree(whisper_artifact, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m))
    fails_cleanly("transcribe", shared_data / "audio" / "jfk.flac", "--artifact", bad,
                  contains=expected, cwd=tmp_path)


# -- 12. Ctrl-C; absurd sample rates --------------------------------------------------------

def test_a_1_hz_wav_is_refused_at_once(tmp_path):
    sf.write(tmp_path / "slow.wav", np.random.default_rng(0).uniform(-1, 1, 5000), 1,
             subtype="FLOAT")
    t0 = time.perf_counter()
    fails_cleanly("transcribe", tmp_path / "slow.wav", "--preset", "tiny", "--backend", "torch",
                  contains="sample rate of 1 Hz", cwd=tmp_path)
    assert time.perf_counter() - t0 < 60


def test_ctrl_c_stops_a_long_transcription_within_a_second(tmp_path, whisper_artifact,
                                                           shared_data):
    jfk, _ = sf.read(shared_data / "audio" / "jfk.flac", dtype="float32")
    sf.write(tmp_path / "long.flac", np.tile(jfk, (60, 1)), 44100)       # 11 minutes
    proc = subprocess.Popen([str(SCRIPT), "transcribe", str(tmp_path / "long.flac"),
                             "--artifact", str(whisper_artifact), "--output-format", "srt",
                             "--output-dir", str(tmp_path / "subs")],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    time.sleep(12)                                   # decoding windows by now
    assert proc.poll() is None
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    waited = time.perf_counter() - t0
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert waited < 2.0, waited
    assert not (tmp_path / "subs").exists() or not list((tmp_path / "subs").iterdir())


# -- messages ---------------------------------------------------------------------------------

def test_what_is_given_as_audio_is_named(tmp_path, shared_data):
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.wav"
    loop.symlink_to(loop)
    (tmp_path / "dir.wav").mkdir()
    for path, what in ((fifo, "a FIFO"), (loop, "a symbolic link loop"),
                       (tmp_path / "dir.wav", "a directory"), ("/dev/null", "a character device"),
                       (tmp_path / "none.wav", "does not exist")):
        fails_cleanly("transcribe", path, "--preset", "tiny", contains=what, cwd=tmp_path)
    fails_cleanly("transcribe", shared_data / "audio" / "jfk.flac", "--output-dir", "/dev/null",
                  contains="a character device, not a directory", cwd=tmp_path)


@pytest.mark.parametrize("args, expected", [
    (["transcribe", "x.wav", "--beam-size", "abc"], "--beam-size takes a whole number"),
    (["transcribe", "x.wav", "--bogus"], "No such option: --bogus"),
    (["transcribe"], "missing argument AUDIO"),
    (["nonsense"], "No such command 'nonsense'"),
    (["train", "svt"], "missing option --data"),
    (["transcribe", "x.wav", "--temperature", "inf"], "--temperature must be a finite number"),
    (["transcribe", "x.wav", "--patience", "nan"], "--patience must be a finite number"),
])
def test_usage_errors_are_one_line(args, expected, tmp_path):
    err = fails_cleanly(*args, contains=expected, cwd=tmp_path)
    assert "--help" in err                       # the hint stays


def test_no_library_notes_and_no_note_before_an_error(tmp_path, whisper_artifact):
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(1).bytes(30000))
    r = run_toolkit("transcribe", tmp_path / "noise.mp3", "--artifact", whisper_artifact,
                    cwd=tmp_path)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot decode"), r.stderr


def test_bench_writes_its_records_into_a_folder_it_makes(tmp_path):
    out = tmp_path / "new" / "deeper" / "b.json"
    r = run_toolkit("bench", "--model", "svt", "--preset", "tiny", "--backend", "ort",
                    "--runs", "1", "--warmup", "0", "--limit", "3", "--out", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = json.loads(out.read_text())
    assert "ort" in {rec["backend"] for rec in records}
    assert out.with_suffix(".csv").is_file()
