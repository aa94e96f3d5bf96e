"""A deployed artifact runs without PyTorch and transformers: importing the runtime path with
both made unimportable works, and `toolkit transcribe / synthesize / embed --artifact` give
their real outputs in a process where `import torch` raises."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from support.cli import SCRIPT
from support.zoo import export, tiny

BLOCKER = textwrap.dedent("""
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked: the artifact path must not need it",
                                  name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")

# everything a process that runs an artifact imports (the CLI commands and the server included)
ARTIFACT_PATH = [
    "toolkit.cli", "toolkit.cli.whisper", "toolkit.cli.gradtts", "toolkit.cli.svt",
    "toolkit.cli.serving", "toolkit.runtime.graphs", "toolkit.runtime.backends",
    "toolkit.runtime.whisper.pipeline", "toolkit.runtime.whisper.longform",
    "toolkit.runtime.whisper.vad",
    "toolkit.runtime.gradtts.pipeline", "toolkit.runtime.gradtts.synthesize",
    "toolkit.runtime.svt.pipeline", "toolkit.serve.server", "toolkit.serve.routes.whisper",
    "toolkit.serve.routes.gradtts", "toolkit.models.whisper.audio",
    "toolkit.models.whisper.tokenizer", "toolkit.cli.marian", "toolkit.runtime.marian.pipeline",
    "toolkit.serve.routes.marian", "toolkit.models.marian.package", "toolkit.models.marian.vocab",
    "toolkit.runtime.internvl.pipeline", "toolkit.models.internvl.image",
    "toolkit.models.internvl.prompt", "toolkit.models.internvl.tokenizer",
    "toolkit.cli.internvl", "toolkit.serve.routes.internvl", "toolkit.models.internvl.default",
]


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    """An environment whose Python cannot import torch or transformers."""
    site = tmp_path_factory.mktemp("blocked")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(site)}


def _run(args, env, cwd):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "toolkit.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_the_blocker_blocks(blocked, tmp_path):
    r = subprocess.run([sys.executable, "-c", "import torch"], env=blocked, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "is blocked" in r.stderr


def test_the_artifact_path_imports_without_torch(blocked, tmp_path):
    code = "import importlib, sys\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in ARTIFACT_PATH) + (
        "print([m for m in ('torch', 'transformers') if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-c", code], env=blocked, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_transcribe_an_artifact_without_torch(blocked, tmp_path, tiny_en_artifact, shared_data):
    r = _run(["transcribe", shared_data / "audio" / "jfk.flac", "--artifact", tiny_en_artifact,
              "--json"], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["text"] == ("And so, my fellow Americans ask not what your country can do for "
                           "you ask what you can do for your country.")
    assert out["backend"] == "ort" and out["segments"]


def test_vad_filter_runs_without_torch(blocked, tmp_path, tiny_en_artifact, shared_data):
    """Silero VAD runs on the toolkit's onnxruntime session: no PyTorch either."""
    r = _run(["transcribe", shared_data / "audio" / "jfk.flac", "--artifact", tiny_en_artifact,
              "--vad-filter", "--json"], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["text"].startswith("And so, my fellow Americans")
    assert len(out["vad"]["spans"]) == 1 and 9 < out["vad"]["speech_s"] <= 11.1
    # and batched (the chunks through the long-form loop's batched path)
    r = _run(["transcribe", shared_data / "audio" / "jfk.flac", "--artifact", tiny_en_artifact,
              "--vad-filter", "--batch-size", "2", "--json"], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    batched = json.loads(r.stdout.strip().splitlines()[-1])
    assert batched["text"] == out["text"] and batched["vad"]["chunks"] == 1


def test_synthesize_and_embed_an_artifact_without_torch(blocked, tmp_path, shared_data):
    tts, svt = tmp_path / "tts", tmp_path / "svt"
    export(tiny("gradtts"), "fp32", tts)
    export(tiny("svt"), "fp32", svt)
    wav = tmp_path / "out" / "hi.wav"
    r = _run(["synthesize", "Hello there.", "--artifact", tts, "--backend", "ort", "--steps",
              "2", "--out", wav], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    assert wav.stat().st_size > 1000 and wav.with_suffix(".npy").is_file()
    r = _run(["embed", shared_data / "video" / "demo.mp4", "--artifact", svt, "--backend",
              "ort", "--size", "32", "--frames", "2", "--json"], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout.strip().splitlines()[-1])["embedding"]) == 64


def test_a_model_run_without_torch_says_what_to_install(blocked, tmp_path, shared_data):
    r = _run(["transcribe", shared_data / "audio" / "jfk.flac", "--preset", "tiny"], blocked,
             tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "toolkit[export]" in r.stderr


def test_the_default_model_transcribes_from_its_cached_export_without_torch(blocked, tmp_path,
                                                                            shared_data):
    """`toolkit transcribe FILE` (no model option): the first run says it exports the default
    model into the cache, once; a later run finds that export without loading the model and
    runs with torch and transformers unimportable."""
    env = {**os.environ, "TOOLKIT_CACHE": str(tmp_path / "cache")}
    jfk = shared_data / "audio" / "jfk.flac"
    first = _run(["transcribe", jfk, "--json"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "first run: exporting the default whisper model (tiny.en, fp32)" in \
        " ".join(first.stderr.split())
    again = _run(["transcribe", jfk, "--json"], {**blocked, "TOOLKIT_CACHE": env["TOOLKIT_CACHE"]},
                 tmp_path)
    assert again.returncode == 0, again.stderr
    assert "first run" not in again.stderr
    text = [json.loads(r.stdout.strip().splitlines()[-1])["text"] for r in (first, again)]
    assert text[0] == text[1] and text[1].startswith("And so, my fellow Americans")


def test_translate_an_artifact_without_torch(blocked, tmp_path, marian_artifact):
    """The Marian artifact path: SentencePiece, NumPy and onnxruntime only."""
    r = _run(["translate", "The file could not be opened.", "--artifact", marian_artifact,
              "--json"], blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["translation"] == "O arquivo não pôde ser aberto."


def test_caption_an_artifact_without_torch(blocked, tmp_path, internvl_artifact, shared_data):
    """The InternVL artifact path: Pillow, tokenizers, NumPy and onnxruntime only."""
    image = sorted((shared_data / "captions" / "test").glob("*.jpg"))[0]
    r = _run(["caption", image, "--artifact", internvl_artifact, "--beam-size", "1", "--json"],
             blocked, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["image"] == str(image) and out["caption"].strip() and out["tokens"] >= 8
