"""Whisper for Triton's Python backend: the toolkit's decode loop as a BLS model.

``toolkit export-triton`` copies this file to ``<repository>/<name>/1/model.py``, beside
``1/artifact/`` (the artifact's manifest and tokenizer, no graphs). The encoder and decoder
graphs are the Triton models named by the config's ``encoder_model`` / ``decoder_model``
parameters; each is a ``Session`` (``TritonSession``) that runs one BLS inference request, so
``WhisperPipeline`` — long-form seeking, beam search, temperature fallback, timestamps — runs
unchanged inside Triton. The Triton container needs the toolkit installed
(``pip install <toolkit>``; see docs/triton.md).

Inputs (per request, batch dim first): ``AUDIO`` float32 16 kHz mono samples; optional
``LANGUAGE``, ``TASK``, ``RESPONSE`` (what ``TEXT`` holds: text, txt, srt, vtt, tsv or json).
Outputs: ``TEXT`` and ``SEGMENTS`` (a JSON list of segments). The recordings of every request
in one ``execute`` call are decoded together, window by window (``longform.advance``, as
``toolkit serve`` does). A bad request gets an error response of one line; the other
requests of the batch are answered as usual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import triton_python_backend_utils as pb_utils

from toolkit.core.errors import ToolkitError
from toolkit.export.manifest import FORMAT, MANIFEST
from toolkit.models.whisper.audio import N_FRAMES, SAMPLE_RATE, log_mel_long
from toolkit.runtime.graphs import Graphs, make_pipeline
from toolkit.runtime.session import Session, TensorInfo
from toolkit.runtime.whisper.longform import LongFormJob, TranscribeOptions, advance
from toolkit.runtime.whisper.pipeline import from_graphs
from toolkit.runtime.whisper.subtitles import WRITERS

RESPONSES = ("text", *WRITERS)
MAX_WINDOWS = 8        # windows per batch when the config does not say (older repositories)


class TritonSession(Session):
    """One Triton model behind the Session interface: ``run`` is a BLS inference request.

    Inputs are sent in the dtype the manifest records for the graph; outputs are asked for in
    CPU memory (``preferred_memory``, Triton 23.04+) and returned as NumPy arrays."""

    backend = "triton"

    def __init__(self, model_name: str, graph: Mapping, precision: str = "fp32"):
        self.model_name = model_name
        self.precision = precision
        self._in = [TensorInfo(t["name"], t["dtype"], list(t["shape"])) for t in graph["inputs"]]
        self._out = [TensorInfo(t["name"], t["dtype"], list(t["shape"]))
                     for t in graph["outputs"]]

    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [pb_utils.Tensor(t.name, np.ascontiguousarray(
            np.asarray(feeds[t.name]).astype(t.dtype, copy=False))) for t in self._in]
        extra = {}
        if hasattr(pb_utils, "PreferredMemory"):   # outputs in host memory: as_numpy works
            extra["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU,
                                                                 0)
        request = pb_utils.InferenceRequest(model_name=self.model_name,
                                            requested_output_names=self.output_names,
                                            inputs=inputs, **extra)
        response = request.exec()
        if response.has_error():
            raise ToolkitError(f"Triton model {self.model_name} failed: "
                               f"{response.error().message()}")
        out = {}
        for name in self.output_names:
            tensor = pb_utils.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise ToolkitError(f"Triton model {self.model_name} returned no output {name}; "
                                   "its config.pbtxt does not match the artifact — run "
                                   "`toolkit export-triton` again")
            a = tensor.as_numpy()
            out[name] = a.astype(np.float32) if a.dtype == np.float16 else a
        return out


def _strings(request, name: str, rows: int) -> list[str | None]:
    """An optional TYPE_STRING input [rows, 1] as one string (or None) per row."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return [None] * rows
    a = tensor.as_numpy()
    if a.ndim != 2 or a.shape[0] != rows or a.shape[1] != 1:
        raise ToolkitError(f"{name} must be one string per row of AUDIO ([{rows}, 1]), not "
                           f"shape {list(a.shape)}")
    out = []
    for v in a[:, 0]:
        s = v.decode("utf-8") if isinstance(v, bytes) else str(v)
        out.append(s.strip() or None)
    return out


def _audio(request) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, "AUDIO")
    if tensor is None:
        raise ToolkitError("the request has no AUDIO input (16 kHz mono float32 samples)")
    audio = tensor.as_numpy()
    if audio.ndim != 2:
        raise ToolkitError(f"AUDIO must be [batch, samples] (16 kHz mono float32), not shape "
                           f"{list(audio.shape)}")
    if audio.shape[1] == 0:
        raise ToolkitError("AUDIO is empty (0 samples); send 16 kHz mono float32 samples")
    if not np.isfinite(audio).all():
        raise ToolkitError("AUDIO contains NaN or infinite samples")
    return np.asarray(audio, dtype=np.float32)


def _error(exc: BaseException):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(_one_line(exc)))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ToolkitError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class TritonPythonModel:
    """Triton's entry points: ``initialize`` (build the pipeline), ``execute``, ``finalize``."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value") for k, v in
                  (config.get("parameters") or {}).items()}
        for key in ("encoder_model", "decoder_model"):
            if not params.get(key):
                raise ToolkitError(f"config.pbtxt of {args.get('model_name')} has no {key} "
                                   "parameter; run `toolkit export-triton` again")
        artifact = Path(args["model_repository"]) / str(args["model_version"]) / "artifact"
        if not (artifact / MANIFEST).is_file():
            artifact = Path(__file__).resolve().parent / "artifact"
        try:
            manifest = json.loads((artifact / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise ToolkitError(f"cannot read {artifact / MANIFEST} ({exc}); run `toolkit "
                               "export-triton` again") from None
        if manifest.get("format") != FORMAT or manifest.get("family") != "whisper":
            raise ToolkitError(f"{artifact / MANIFEST} is not a Whisper artifact manifest; run "
                               "`toolkit export-triton` again")
        precision = manifest.get("precision", "fp32")
        sessions = {g: TritonSession(params[f"{g}_model"], manifest["graphs"][g], precision)
                    for g in ("encoder", "decoder")}
        graphs = Graphs("whisper", sessions, manifest.get("model_config") or {},
                        manifest.get("source") or {}, "triton", precision, artifact=artifact,
                        revision=manifest.get("export_revision"))
        self.pipe = make_pipeline(graphs, from_graphs)
        self.max_windows = int(params.get("max_windows") or MAX_WINDOWS)
        self.decoder_rows = int(params.get("decoder_rows") or 0)

    def start(self, audio: np.ndarray, language: str | None, task: str | None,
              response: str | None) -> tuple[LongFormJob, str]:
        """One recording's long-form job (checked before anything is decoded)."""
        response = (response or "text").lower()
        if response not in RESPONSES:
            raise ToolkitError(f"unknown RESPONSE {response!r}; use one of "
                               + ", ".join(RESPONSES))
        options = TranscribeOptions(language=language, task=task or "transcribe")
        mel = log_mel_long(audio, self.pipe.n_mels)
        return LongFormJob.start(self.pipe, mel, mel.shape[1] - N_FRAMES,
                                 len(audio) / SAMPLE_RATE, options), response

    @staticmethod
    def outputs(job: LongFormJob, response: str) -> tuple[str, str]:
        """(TEXT, SEGMENTS) of a finished job."""
        res = job.result
        segments = [s.as_dict() for s in res.segments]
        if response == "text":
            text = res.text
        else:
            text = WRITERS[response]({"text": res.text, "segments": segments,
                                      "language": res.language, "task": job.options.task,
                                      "audio_seconds": round(job.duration, 3)})
        return text, json.dumps(segments, ensure_ascii=False)

    def decode(self, jobs: list[LongFormJob]) -> None:
        """Every job to its end, their windows encoded and decoded together (the server's
        batched loop, ``longform.advance``)."""
        beam = max([max(j.options.beam_size, j.options.best_of) for j in jobs] or [1])
        per = self.max_windows
        if self.decoder_rows:             # a TensorRT decoder: windows × beams within its profile
            if beam > self.decoder_rows:
                raise ToolkitError(f"{beam} beams need {beam} decoder rows per window; the "
                                   f"decoder engine takes {self.decoder_rows}")
            per = max(1, min(per, self.decoder_rows // beam))
        while not all(j.done for j in jobs):
            advance(self.pipe, jobs, per)

    def execute(self, requests: list) -> list:
        """One response per request, in order. The recordings of all the requests Triton
        hands over together (its dynamic batching) are decoded as one batch; a request that
        fails alone gets a one-line error and never fails the others."""
        responses: list = [None] * len(requests)
        work: dict[int, list[tuple[LongFormJob, str]]] = {}
        for k, request in enumerate(requests):
            try:
                audio = _audio(request)
                rows = audio.shape[0]
                langs = _strings(request, "LANGUAGE", rows)
                tasks = _strings(request, "TASK", rows)
                formats = _strings(request, "RESPONSE", rows)
                work[k] = [self.start(audio[i], langs[i], tasks[i], formats[i])
                           for i in range(rows)]
            except Exception as exc:  # noqa: BLE001 - one bad request never fails the others
                responses[k] = _error(exc)
        try:
            self.decode([job for jobs in work.values() for job, _ in jobs])
        except Exception:             # noqa: BLE001 - find the request that fails, alone
            for k, jobs in list(work.items()):
                try:
                    self.decode([job for job, _ in jobs])
                except Exception as exc:  # noqa: BLE001
                    responses[k] = _error(exc)
                    del work[k]
        for k, jobs in work.items():
            done = [self.outputs(job, fmt) for job, fmt in jobs]
            text = np.array([[t.encode("utf-8")] for t, _ in done], dtype=np.object_)
            segs = np.array([[s.encode("utf-8")] for _, s in done], dtype=np.object_)
            responses[k] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("TEXT", text), pb_utils.Tensor("SEGMENTS", segs)])
        return responses

    def finalize(self) -> None:
        pipe = getattr(self, "pipe", None)
        if pipe is not None:
            pipe.close()
