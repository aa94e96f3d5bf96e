"""What a hostile user tried (issue 23), each through the console script: nothing of theirs is
deleted, nothing outside an artifact is read, and every bad input is one line."""

import hashlib
import json
import os
import shutil

import pytest

from support.cli import fails_cleanly, run_toolkit


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
