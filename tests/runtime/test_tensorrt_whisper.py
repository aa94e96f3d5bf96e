"""The Whisper decode loop on the trt backend (TensorRT 10 and 11 doubles + fake CUDA device):
tokens equal onnxruntime's, the KV cache never leaves the device, device figures reach the bench
records; `toolkit build` + `toolkit transcribe --backend trt` end to end at every precision."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from support import trt_double
from support.zoo import export as export_model
from support.zoo import save_small_checkpoint
from toolkit import registry
from toolkit.cli import app
from toolkit.core.errors import ToolkitError
from toolkit.export.tensorrt import build_artifact
from toolkit.models.whisper.loading import load_model as load_whisper
from toolkit.runtime.session import OrtSession
from toolkit.runtime.tensorrt import CudaRuntime, DeviceTensor, TensorRTSession
from toolkit.runtime.whisper.longform import TranscribeOptions

open_pipeline = registry.get("whisper").open_pipeline


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("trtw") / "ckpt", mels=80, vocab=51865)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory):
    """fp32 export at the path the bench looks for (workdir/whisper-<tag>-fp32)."""
    lw = load_whisper(str(ckpt), None, 0)
    work = tmp_path_factory.mktemp("work")
    export_model(lw, "fp32", work / f"whisper-{lw.cache_tag}-fp32")
    return work, lw.cache_tag


@pytest.fixture(params=trt_double.LABELS)
def built(exported, tmp_path, monkeypatch, request):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    trt_double.install(monkeypatch, request.param)
    work, tag = exported
    dst = tmp_path / "work"
    shutil.copytree(work, dst)
    build_artifact(dst / f"whisper-{tag}-fp32")
    return dst, tag


@pytest.fixture(scope="module")
def three_exports(ckpt, tmp_path_factory):
    """The small checkpoint exported at fp32, fp16 (fp32 islands as Casts) and int8 (QDQ)."""
    lw = load_whisper(str(ckpt), None, 0)
    base = tmp_path_factory.mktemp("three")
    for precision in ("fp32", "fp16", "int8"):
        export_model(lw, precision, base / precision)
    return base


@pytest.mark.parametrize("version", trt_double.LABELS)
def test_cli_build_and_transcribe_every_precision(three_exports, tmp_path, monkeypatch,
                                                   shared_data, version):
    """`toolkit build` of the fp32, fp16 and int8 artifacts (engines, manifest, trtexec lines of
    that TensorRT) and `toolkit transcribe --backend trt` through the double's runtime."""
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    trt = trt_double.install(monkeypatch, version)
    runner = CliRunner()
    known = set(trt_double.API["versions"][version]["trtexec_options"])
    for precision in ("fp32", "fp16", "int8"):
        art = tmp_path / precision
        shutil.copytree(three_exports / precision, art)
        r = runner.invoke(app, ["build", str(art)])
        assert r.exit_code == 0, r.output
        manifest = json.loads((art / "manifest.json").read_text())
        for name in ("encoder", "decoder"):
            (e,) = manifest["graphs"][name]["engines"]
            assert e["key"]["precision"] == precision and e["key"]["tensorrt"] == trt.__version__
            plan = json.loads((art / e["file"]).read_bytes()[8:])
            assert plan["strongly_typed"] and plan["runs"] == precision
            opts = {a.split("=")[0] for a in e["trtexec"].split() if a.startswith("--")}
            assert opts <= known and ("--stronglyTyped" in opts) == (trt._major == 10)
        builds = [d for w, d in trt_double.CALLS if w == "build_serialized_network"]
        assert builds and all(b["flags"] == [] and b["strongly_typed"] for b in builds)
        trt_double.CALLS.clear()
        runs_before = trt_double.DEVICE.mallocs
        r = runner.invoke(app, ["transcribe", str(shared_data / "audio" / "jfk.flac"),
                                "--artifact", str(art), "--backend", "trt", "--language", "en",
                                "--max-new-tokens", "4", "--beam-size", "1", "--json"])
        assert r.exit_code == 0, r.output
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        assert rec["backend"] == "trt" and 1 <= len(rec["tokens"]) <= 4
        enqueued = [d for w, d in trt_double.CALLS if w == "execute_async_v3"]
        assert len(enqueued) >= 2 and trt_double.DEVICE.mallocs > runs_before


def _features(seed=0):
    return (np.random.default_rng(seed).standard_normal((1, 80, 3000)) * 0.3).astype(np.float32)


def test_trt_decode_keeps_kv_cache_on_device(built, tmp_path):
    work, tag = built
    art = work / f"whisper-{tag}-fp32"
    ort = open_pipeline(artifact=art, backend="ort")
    trt = open_pipeline(artifact=art, backend="trt")
    assert isinstance(trt.decoder, TensorRTSession)
    assert isinstance(ort.decoder, OrtSession)
    dev = trt_double.DEVICE

    # spy on the decoder: what it is fed and what it returns
    calls = []
    real = trt.decoder.run_device

    def spy(feeds):
        out = real(feeds)
        calls.append((dict(feeds), out))
        return out

    trt.decoder.run_device = spy
    feats = tmp_path / "f.npy"
    np.save(feats, _features()[0])
    for s in trt.sessions:
        s.reset_device_stats()
    dev.dtoh_log.clear()
    kw = dict(language=None, max_new_tokens=6, force_length=True)  # multilingual: detects language
    got = trt.transcribe_windows(feats, **kw)
    want = ort.transcribe_windows(feats, **kw)
    assert len(want["tokens"]) == 6 and got["tokens"] == want["tokens"]
    assert got["language"] == want["language"]

    steps = len(calls)
    assert steps == 1 + 6  # language detection + 6 decode steps
    present_ptrs = {t.ptr for _, out in calls for n, t in out.items() if n.startswith("present_")}
    logits_ptrs = {out["logits"].ptr for _, out in calls}
    assert present_ptrs.isdisjoint(logits_ptrs)
    # the only device->host copies: one logits tensor per decoder call
    assert len(dev.dtoh_log) == steps
    assert {src for src, _ in dev.dtoh_log} <= logits_ptrs
    # first step of each decode: zero-length host cache; later steps: the previous present K/V
    feeds0 = calls[0][0]
    assert isinstance(feeds0["past_key_0"], np.ndarray) and feeds0["past_key_0"].shape[2] == 0
    for (prev_feeds, prev_out), (feeds, _) in zip(calls[1:-1], calls[2:]):
        assert isinstance(feeds["past_key_0"], DeviceTensor)
        assert feeds["past_value_1"] is prev_out["present_value_1"]
        assert feeds["past_key_0"].shape[2] == prev_out["present_key_0"].shape[2]
    # cross K/V straight from the encoder's device outputs, never through the host
    assert all(isinstance(f["cross_key_0"], DeviceTensor) for f, _ in calls)

    enc, dec = (s.device_stats() for s in trt.sessions)
    assert dec["device_runs"] == steps and enc["device_runs"] == 1
    assert dec["device_ms"] > 0 and enc["device_ms"] > 0
    act_mb = trt_double.ACTIVATION_BYTES / 2**20
    assert dec["device_peak_mb"] > act_mb and enc["device_peak_mb"] > act_mb
    assert "activation" in dec["device_memory"]
    for s in trt.sessions:
        s.reset_device_stats()
        assert s.device_stats()["device_runs"] == 0 and s.device_stats()["device_ms"] == 0.0
    # CPU backends have no device figures
    assert ort.decoder.device_stats()["device_ms"] is None
    assert ort.decoder.device_stats()["device_peak_mb"] is None
    for s in trt.sessions:
        s.close()
    assert dev.frees == dev.mallocs


def test_beam_search_and_long_form_on_trt_decode_what_ort_decodes(built):
    """The search and the seeking loop are written once: on the trt backend (caches reordered
    per beam through the host) they give onnxruntime's tokens, with timestamps too."""
    work, tag = built
    art = work / f"whisper-{tag}-fp32"
    ort = open_pipeline(artifact=art, backend="ort")
    trt = open_pipeline(artifact=art, backend="trt")
    feats = _features(2)
    prompt = ort.tokenizer.sot_sequence("en")
    for beam in (1, 3):
        want = ort.decode_features(feats, prompt, 8, beam_size=beam).tokens
        got = trt.decode_features(feats, prompt, 8, beam_size=beam).tokens
        assert got == want and len(want[0]) >= 1
    audio = (np.random.default_rng(3).standard_normal(16000 * 40) * 0.1).astype(np.float32)
    opts = TranscribeOptions(language="en", beam_size=2, temperatures=(0.0,), max_new_tokens=6)
    a, b = ort.transcribe_audio(audio, opts), trt.transcribe_audio(audio, opts)
    assert [s.tokens for s in a.segments] == [s.tokens for s in b.segments]
    assert a.windows == b.windows >= 2


def test_device_time_excludes_host_work(built):
    """device_ms only counts work between the CUDA events, not host time between calls."""
    work, tag = built
    trt = open_pipeline(artifact=work / f"whisper-{tag}-fp32", backend="trt")
    dev = trt_double.DEVICE
    cross = trt.encode(_features(1))
    trt.decoder.reset_device_stats()
    before = dev.clock_ms
    dev.clock_ms += 1000.0  # pretend one second passes on the device outside any enqueue
    trt.step(np.array([[50258]], np.int64), trt.empty_cache(1), cross)
    ms = trt.decoder.device_stats()["device_ms"]
    assert 0 < ms <= dev.clock_ms - before - 1000.0 + 1e-6


def test_bench_reports_device_figures_for_trt_only(built, tmp_path, capsys):
    work, tag = built
    out = tmp_path / "bench.json"
    records = registry.get("whisper").run_bench(checkpoint=str(_ckpt_of(work, tag)), backends=["ort", "trt"],
                            precisions=["fp32"], runs=1, warmup=0, limit=2, tokens=4,
                            workdir=work, out=out, isolate=False)
    by = {r["backend"]: r for r in records}
    assert set(by) == {"hf", "torch", "ort", "trt"}
    t = by["trt"]
    assert t["device"] == "cuda" and t["tokens_per_utterance"] == [4, 4]
    assert len(t["device_ms_samples"]) == 2
    assert 0 < t["device_ms_p50"] <= t["device_ms_p99"]
    assert t["device_ms_p50"] < t["latency_ms_p50"]  # device time is part of end-to-end time
    assert t["device_peak_mb"] >= 2 * trt_double.ACTIVATION_BYTES / 2**20
    assert t["token_exact_match_vs_torch_fp32"] == by["ort"]["token_exact_match_vs_torch_fp32"]
    for b in ("torch", "ort"):
        assert by[b]["device"] == "cpu"
        assert "device_ms_p50" not in by[b] and "device_peak_mb" not in by[b]
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "device ms" in text and "dev p99" in text and "device peak" in text and "trtexec" in text
    saved = json.loads(out.read_text())
    assert {r["backend"]: r.get("device_ms_p50") for r in saved}["trt"] == t["device_ms_p50"]


def _ckpt_of(work, tag):
    from toolkit.export.manifest import load_manifest

    return load_manifest(work / f"whisper-{tag}-fp32")["source"]["checkpoint"]


def test_cpu_bench_has_no_device_columns():
    from toolkit.bench.harness import _columns
    from toolkit.bench.whisper import SPEC

    rec = {"backend": "ort", "precision": "fp32", "latency_ms_p50": 1.0, "rtf": 0.1,
           "wer_vs_reference": 2.0}
    headers = [h for h, _, _ in _columns(SPEC, [rec])]
    assert not any("dev" in h for h in headers) and "WER" in headers


def test_torch_device_choice(monkeypatch):
    import torch

    from toolkit.runtime.torch_session import TorchSession, torch_device

    monkeypatch.setenv("TOOLKIT_TORCH_DEVICE", "cpu")
    assert torch_device() == "cpu"
    monkeypatch.setenv("TOOLKIT_TORCH_DEVICE", "tpu")
    with pytest.raises(ToolkitError, match="cpu or cuda"):
        torch_device()
    monkeypatch.delenv("TOOLKIT_TORCH_DEVICE")
    assert torch_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("TOOLKIT_TORCH_DEVICE", "cuda")
        with pytest.raises(ToolkitError, match="no CUDA device"):
            torch_device()
    s = TorchSession(torch.nn.Linear(2, 2), ["x"], ["y"], device="cpu")
    s.run({"x": np.ones((1, 2), np.float32)})
    assert s.device_stats() == {"device_ms": None, "device_runs": 0, "device_peak_mb": None,
                                "device_memory": None}


# ------------------------------------------------------------------------------------------
# CudaRuntime against the cuda-python names (cuda.bindings.runtime / cuda.cudart)
# ------------------------------------------------------------------------------------------

class _FakeCudart:
    """Only the cuda-python runtime functions the event/memory calls use, real signatures:
    each returns a tuple whose first element is a cudaError_t."""

    class cudaError_t(int):
        pass

    def __init__(self):
        self.calls = []
        self.fail = None

    def _r(self, name, *rest):
        self.calls.append(name)
        err = self.cudaError_t(2 if name == self.fail else 0)
        return (err, *rest)

    def cudaEventCreate(self):
        return self._r("cudaEventCreate", object())

    def cudaEventDestroy(self, event):
        return self._r("cudaEventDestroy")

    def cudaEventRecord(self, event, stream):
        return self._r("cudaEventRecord")

    def cudaEventSynchronize(self, event):
        return self._r("cudaEventSynchronize")

    def cudaEventElapsedTime(self, start, end):
        return self._r("cudaEventElapsedTime", 1.25)

    def cudaMemGetInfo(self):
        return self._r("cudaMemGetInfo", 3 << 30, 8 << 30)


def test_cuda_runtime_event_and_memory_calls(monkeypatch):
    fake = _FakeCudart()
    monkeypatch.setattr("toolkit.core.hardware.cuda_runtime", lambda: fake)
    rt = CudaRuntime()
    a, b = rt.event_create(), rt.event_create()
    rt.event_record(a, 7)
    rt.event_record(b, 7)
    rt.event_synchronize(b)
    assert rt.event_elapsed_ms(a, b) == 1.25
    assert rt.mem_get_info() == (3 << 30, 8 << 30)
    rt.event_destroy(a)
    assert fake.calls == ["cudaEventCreate", "cudaEventCreate", "cudaEventRecord",
                          "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
                          "cudaMemGetInfo", "cudaEventDestroy"]
    fake.fail = "cudaEventElapsedTime"
    with pytest.raises(ToolkitError, match="cudaEventElapsedTime failed with error 2"):
        rt.event_elapsed_ms(a, b)
