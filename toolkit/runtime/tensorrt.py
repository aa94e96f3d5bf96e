"""Native TensorRT 10 and 11 engines behind the ``Session`` interface (backend ``trt``).

Only calls present in both majors' Python bindings are used, or one is picked per version:
``Runtime.deserialize_cuda_engine`` reads the engine through an ``IStreamReaderV2`` where the
bindings have one (TensorRT >= 10.7 and 11; in chunks, so a multi-GB engine is never held whole
in host memory — shared with the GPU on a Jetson) and from bytes on 10.3 (whose v1
``IStreamReader`` TensorRT 11 removed); activation memory is ``device_memory_size_v2`` (10.1+
and 11; 11 removed ``device_memory_size``); ``create_execution_context()`` with its default
(static) allocation strategy, the one signature both have.

- The engine is found through the artifact manifest's ``engines`` entry for the graph and
  precision (built by ``toolkit build``). An engine built for another GPU / compute capability
  or another TensorRT version is refused with the command that rebuilds it here.
- Tensors are bound by name (``set_input_shape`` / ``set_tensor_address``) and the engine runs
  on a CUDA stream with ``execute_async_v3``.
- Device buffers are allocated on first use, reused across calls, and grown only when a
  larger shape arrives (never beyond the profile's max, which is checked first).
- ``run(feeds)`` is the common Session contract (NumPy in, NumPy out). ``run_device(feeds)``
  keeps outputs on the device: it returns ``DeviceTensor``s that can be fed straight back as
  inputs of the next call (e.g. Whisper's self-attention KV cache between decode steps) with
  no host round trip. Outputs are double-buffered so that feeding step *n*'s output into step
  *n+1* never reads and writes the same memory; a ``DeviceTensor`` stays valid until the
  second-next call of the same session.
- ``device_stats()``: device compute time from CUDA events recorded around every enqueue (read
  lazily, no extra sync in the loop) and peak device memory of this session's own allocations
  (I/O buffers + the engine's activation memory) — the figures trtexec reports as GPU Compute
  Time and device memory, next to the host end-to-end latency the benchmarks time.
- ``cuda_graph=True`` captures the enqueue in a CUDA graph per (shapes, addresses) signature
  and replays it (for fixed-shape steps such as a decode step at a given cache length).

CUDA memory and streams use **cuda-python** (``cuda.bindings.runtime``, or ``cuda.cudart`` on
older releases): ``pip install cuda-python`` on a server; on Jetson the same wheel (aarch64).
torch.cuda is not needed. Both ``tensorrt`` and ``cuda`` are imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..core import hardware
from ..core.errors import MissingDependency, ToolkitError
from ..core.files import sha256_file
from ..export.manifest import inside
from ..export.tensorrt import find_engine, require_tensorrt
from .session import Session, TensorInfo

ALIGN = 256


# --------------------------------------------------------------------------------------------
# CUDA runtime layer (cuda-python); replaced by a test double in the unit tests
# --------------------------------------------------------------------------------------------


class CudaRuntime:
    """The few CUDA runtime calls the session needs, via cuda-python."""

    def __init__(self):
        self.rt = hardware.cuda_runtime()
        if self.rt is None:
            raise MissingDependency(
                "the trt backend needs cuda-python for device memory and "
                "streams: pip install cuda-python (see docs/tensorrt.md)"
            )

    def _check(self, result, what: str):
        err = result[0] if isinstance(result, tuple) else result
        if int(err) != 0:
            raise ToolkitError(
                f"CUDA {what} failed with error {int(err)} ({err}); check the "
                "GPU with `toolkit doctor` / nvidia-smi (tegrastats on Jetson)"
            )
        if isinstance(result, tuple):
            return result[1] if len(result) == 2 else result[1:]
        return None

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def stream_create(self) -> int:
        return int(self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate"))

    def stream_destroy(self, stream: int) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: int) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._check(
            self.rt.cudaMemcpyAsync(
                dst,
                src.ctypes.data,
                src.nbytes,
                self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream,
            ),
            "cudaMemcpyAsync HtoD",
        )

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._check(
            self.rt.cudaMemcpyAsync(
                dst.ctypes.data,
                src,
                dst.nbytes,
                self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream,
            ),
            "cudaMemcpyAsync DtoH",
        )

    def graph_capture_begin(self, stream: int) -> None:
        self._check(
            self.rt.cudaStreamBeginCapture(
                stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            ),
            "cudaStreamBeginCapture",
        )

    def graph_capture_end(self, stream: int):
        graph = self._check(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        return self._check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def graph_launch(self, graph_exec, stream: int) -> None:
        self._check(self.rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def graph_destroy(self, graph_exec) -> None:
        self._check(self.rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")

    # events: device compute time, as trtexec's "GPU Compute Time"
    def event_create(self):
        return self._check(self.rt.cudaEventCreate(), "cudaEventCreate")

    def event_destroy(self, event) -> None:
        self._check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    def event_record(self, event, stream: int) -> None:
        self._check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_synchronize(self, event) -> None:
        self._check(self.rt.cudaEventSynchronize(event), "cudaEventSynchronize")

    def event_elapsed_ms(self, start, end) -> float:
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) bytes of the current device (device-wide, all processes)."""
        free, total = self._check(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free), int(total)


@dataclass
class DeviceTensor:
    """A tensor living in device memory owned by a TensorRTSession (see ``run_device``)."""

    ptr: int
    shape: tuple
    dtype: np.dtype
    _session: "TensorRTSession"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def numpy(self) -> np.ndarray:
        """Copy to the host (synchronises the session's stream)."""
        return self._session._download(self)


class _Buffer:
    __slots__ = ("ptr", "capacity")

    def __init__(self, ptr: int, capacity: int):
        self.ptr, self.capacity = ptr, capacity


def _rebuild_hint(artifact_dir: Path, precision: str) -> str:
    flag = {"fp16": " --fp16", "int8": " --int8"}.get(precision, "")
    return f"toolkit build {artifact_dir}{flag}"


READ_CHUNK = 64 << 20  # bytes per IStreamReaderV2.read: bounds the host copy of an engine


def deserialize(trt, runtime, path: Path):
    """``runtime.deserialize_cuda_engine`` of the engine file at ``path``.

    TensorRT >= 10.7 and 11 (``IStreamReaderV2`` in the bindings): streamed from the file in
    ``READ_CHUNK`` pieces. TensorRT 10.3 (JetPack 6): the file's bytes (its v1 reader also
    hands TensorRT whole buffers, and 11 removed it)."""
    reader_base = getattr(trt, "IStreamReaderV2", None)
    if reader_base is None:
        return runtime.deserialize_cuda_engine(path.read_bytes())

    class _FileReader(reader_base):
        def __init__(self, f):
            reader_base.__init__(self)
            self._file = f

        def read(self, size, stream):
            return self._file.read(min(int(size), READ_CHUNK))

        def seek(self, offset, where):
            self._file.seek(int(offset), int(where))  # SeekPosition SET/CUR/END = 0/1/2
            return True

    with open(path, "rb") as f:
        return runtime.deserialize_cuda_engine(_FileReader(f))


def _activation_bytes(engine) -> int:
    """Device memory an execution context allocates for activations: ``device_memory_size_v2``
    (TensorRT >= 10.1 and 11, which removed the old name); 10.0 only has ``device_memory_size``."""
    for attr in ("device_memory_size_v2", "device_memory_size"):
        try:
            return int(getattr(engine, attr))
        except AttributeError:
            continue
    return 0


def _current_gpu() -> dict:
    return hardware.gpu_identity()  # looked up at call time (tests substitute a GPU)


def select_engine(
    artifact_dir: Path, manifest_graph: Mapping, precision: str, trt_version: str, gpu: Mapping
) -> dict:
    """The manifest engine entry usable on this GPU + TensorRT, or a ToolkitError saying why."""

    hint = _rebuild_hint(artifact_dir, precision)
    cands = find_engine(manifest_graph, precision)
    if not cands:
        raise ToolkitError(
            f"artifact {artifact_dir} has no {precision} TensorRT engine for this "
            f"graph; build it on this machine with `{hint}`"
        )
    for e in reversed(cands):
        k = e["key"]
        if (
            k.get("gpu") == gpu["name"]
            and k.get("compute_capability") == gpu["compute_capability"]
            and k.get("tensorrt") == str(trt_version)
        ):
            return e
    k = cands[-1]["key"]
    raise ToolkitError(
        f"engine {cands[-1]['file']} was built for {k.get('gpu')} (compute capability "
        f"{k.get('compute_capability')}) with TensorRT {k.get('tensorrt')}, but this machine has "
        f"{gpu['name']} (compute capability {gpu['compute_capability']}) with TensorRT "
        f"{trt_version}; TensorRT engines only run where they were built — rebuild here with "
        f"`{hint}`"
    )


class TensorRTSession(Session):
    """Runs a serialized TensorRT 10/11 engine; same ``run`` contract as the other backends."""

    backend = "trt"

    def __init__(
        self,
        engine_path: str | Path,
        precision: str = "fp32",
        cuda: CudaRuntime | None = None,
        cuda_graph: bool = False,
        profiles: Mapping[str, Mapping] | None = None,
    ):

        trt = require_tensorrt(Path(engine_path).parent)
        self._trt = trt
        self.precision = precision
        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise ToolkitError(
                f"TensorRT engine {self.engine_path} does not exist; build it with "
                f"`toolkit build {self.engine_path.parent}`"
            )
        self._cuda = cuda if cuda is not None else CudaRuntime()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = deserialize(trt, self._runtime, self.engine_path)
        if self.engine is None:
            raise ToolkitError(
                f"TensorRT {trt.__version__} cannot deserialize "
                f"{self.engine_path.name} (built by another TensorRT version or "
                f"corrupt); rebuild it with `toolkit build {self.engine_path.parent}`"
            )
        self.context = self.engine.create_execution_context()
        self._bind_io(trt)
        self._profiles = dict(profiles or {})
        self._stream = self._cuda.stream_create()
        self._in_bufs: dict[str, _Buffer] = {}
        self._out_bufs: dict[str, list[_Buffer]] = {}
        self._out_slot = 0
        self.allocations = 0  # device allocations made (buffer growth is visible here)
        # device figures (device_stats): CUDA events around each enqueue, resolved lazily
        self._events: list = []  # free event pool
        self._pending: list = []  # (start, end) pairs not yet read
        self._dev_ms, self._dev_runs = 0.0, 0
        self._live_bytes = 0  # this session's I/O buffers now
        self._peak_bytes = 0  # ... and their peak since reset_device_stats()
        self._activation_bytes = _activation_bytes(self.engine)
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple, object] = {}
        self._seen: set[tuple] = set()

    def _bind_io(self, trt) -> None:
        """Inputs/outputs of the engine by name, their NumPy dtypes and profile limits."""
        self._in: list[TensorInfo] = []
        self._out: list[TensorInfo] = []
        self._np_dtype: dict[str, np.dtype] = {}
        self._limits: dict[str, tuple] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = list(self.engine.get_tensor_shape(name))
            self._np_dtype[name] = dtype
            info = TensorInfo(name, dtype.name, shape)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._in.append(info)
                if any(d < 0 for d in shape):
                    mn, _, mx = self.engine.get_tensor_profile_shape(name, 0)
                    self._limits[name] = (tuple(mn), tuple(mx))
            else:
                self._out.append(info)

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def from_artifact_graph(
        cls,
        path: str | Path,
        manifest_graph: Mapping,
        precision: str,
        cuda: CudaRuntime | None = None,
        cuda_graph: bool = False,
    ) -> "TensorRTSession":
        """Open the engine built for graph file ``path`` (an .onnx in an artifact)."""

        path = Path(path)
        artifact_dir = path.parent
        trt = require_tensorrt(artifact_dir)
        entry = select_engine(
            artifact_dir, manifest_graph, precision, str(trt.__version__), _current_gpu()
        )
        engine = inside(artifact_dir, entry.get("file"), "engine file")
        if engine.is_file() and sha256_file(engine) != entry.get("sha256"):
            raise ToolkitError(
                f"engine {engine.name} does not match the sha256 in its manifest "
                f"(modified or corrupt); rebuild it with "
                f"`{_rebuild_hint(artifact_dir, precision)}`"
            )
        return cls(
            engine,
            precision=precision,
            cuda=cuda,
            cuda_graph=cuda_graph,
            profiles=entry.get("profiles"),
        )

    # ---------------------------------------------------------------- Session interface
    def _run_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        dev = self._run_device_impl(feeds)
        out = {name: self._download(t, sync=False) for name, t in dev.items()}
        self._cuda.synchronize(self._stream)
        return {n: (a.astype(np.float32) if a.dtype == np.float16 else a) for n, a in out.items()}

    def _run_device_impl(self, feeds: Mapping[str, object]) -> dict[str, DeviceTensor]:
        """Outputs left on the device. Inputs: NumPy arrays or ``DeviceTensor``s."""
        in_ptrs = self._bind_inputs(feeds)
        slot = self._out_slot
        result = self._bind_outputs(slot, in_ptrs)
        if not self.cuda_graph:
            self._out_slot = 1 - slot
        self._enqueue(feeds, result)
        return result

    def _bind_inputs(self, feeds: Mapping[str, object]) -> set:
        """Shapes and addresses of every input (host arrays copied in); the pointers read."""
        ctx = self.context
        in_ptrs = set()
        for info in self._in:
            v = feeds[info.name]
            want = self._np_dtype[info.name]
            if isinstance(v, DeviceTensor):
                if np.dtype(v.dtype) != want:
                    raise ToolkitError(
                        f"device input {info.name} is {np.dtype(v.dtype)}, the engine takes {want}"
                    )
                shape, ptr = tuple(v.shape), v.ptr
                self._check_shape(info.name, shape)
                in_ptrs.add(ptr)
            else:
                a = np.ascontiguousarray(np.asarray(v), dtype=want)
                shape = a.shape
                self._check_shape(info.name, shape)
                buf = self._ensure(self._in_bufs, info.name, a.nbytes)
                self._cuda.htod(buf.ptr, a, self._stream)
                ptr = buf.ptr
            if not ctx.set_input_shape(info.name, shape):
                raise ToolkitError(f"TensorRT rejected shape {shape} for input {info.name}")
            ctx.set_tensor_address(info.name, ptr)
        return in_ptrs

    def _bind_outputs(self, slot: int, in_ptrs: set) -> dict[str, DeviceTensor]:
        """An output buffer per output (double-buffered, never one an input is read from)."""
        ctx = self.context
        result: dict[str, DeviceTensor] = {}
        for info in self._out:
            shape = tuple(ctx.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise ToolkitError(
                    f"output {info.name} has a data-dependent shape {shape}; the "
                    "trt backend needs shapes known from the inputs"
                )
            nbytes = int(np.prod(shape, dtype=np.int64)) * self._np_dtype[info.name].itemsize
            slots = self._out_bufs.setdefault(info.name, [None, None])
            use = slot
            if slots[use] is not None and slots[use].ptr in in_ptrs:
                use = 1 - use  # never write the buffer an input is read from
            buf = self._ensure_slot(slots, use, nbytes)
            ctx.set_tensor_address(info.name, buf.ptr)
            result[info.name] = DeviceTensor(buf.ptr, shape, self._np_dtype[info.name], self)
        return result

    def to_host(self, value) -> np.ndarray:
        a = value.numpy() if isinstance(value, DeviceTensor) else np.asarray(value)
        return a.astype(np.float32) if a.dtype == np.float16 else a

    def device_stats(self) -> dict:
        """Device compute time (CUDA events around ``execute_async_v3`` / graph launch,
        summed) and peak device memory of this session: its own I/O buffers (tracked at
        every cudaMalloc/cudaFree) + the execution context's activation memory
        (``engine.device_memory_size_v2``). Engine weights and the CUDA context are not
        counted (compare with cudaMemGetInfo / tegrastats for the whole process)."""
        self._collect()
        return {
            "device_ms": self._dev_ms,
            "device_runs": self._dev_runs,
            "device_peak_mb": (self._peak_bytes + self._activation_bytes) / 2**20,
            "device_memory": "session I/O buffers + TensorRT activation memory",
        }

    def reset_device_stats(self) -> None:
        self._collect()
        self._dev_ms, self._dev_runs = 0.0, 0
        self._peak_bytes = self._live_bytes

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._collect()
        for ev in self._events:
            self._cuda.event_destroy(ev)
        self._events.clear()
        for g in self._graphs.values():
            self._cuda.graph_destroy(g)
        self._graphs.clear()
        for buf in list(self._in_bufs.values()) + [
            b for s in self._out_bufs.values() for b in s if b
        ]:
            self._free(buf)
        self._in_bufs.clear()
        self._out_bufs.clear()
        if getattr(self, "_stream", None) is not None:
            self._cuda.stream_destroy(self._stream)
            self._stream = None

    # ---------------------------------------------------------------- internals
    def _check_shape(self, name: str, shape: tuple) -> None:
        info = next(t for t in self._in if t.name == name)
        if len(shape) != len(info.shape) or any(
            d >= 0 and d != s for d, s in zip(info.shape, shape)
        ):
            raise ToolkitError(
                f"input {name} has shape {tuple(shape)}; the engine takes "
                f"{tuple(info.shape)} (-1 = dynamic)"
            )
        if name in self._limits:
            mn, mx = self._limits[name]
            if any(s < a or s > b for s, a, b in zip(shape, mn, mx)):
                raise ToolkitError(
                    f"input {name} shape {tuple(shape)} is outside the engine's "
                    f"profile {mn}..{mx}; rebuild with a wider range, e.g. "
                    f"`toolkit build DIR --profile AXIS=min:opt:max`"
                )

    def _max_bytes(self, name: str, itemsize: int) -> int | None:
        if name in self._limits:
            return int(np.prod(self._limits[name][1], dtype=np.int64)) * itemsize
        return None

    def _alloc(self, nbytes: int) -> _Buffer:
        cap = max(ALIGN, -(-int(nbytes) // ALIGN) * ALIGN)
        self.allocations += 1
        buf = _Buffer(self._cuda.malloc(cap), cap)
        self._live_bytes += cap
        self._peak_bytes = max(self._peak_bytes, self._live_bytes)
        return buf

    def _free(self, buf: _Buffer) -> None:
        self._cuda.free(buf.ptr)
        self._live_bytes -= buf.capacity

    def _ensure(self, bufs: dict, name: str, nbytes: int) -> _Buffer:
        buf = bufs.get(name)
        if buf is None or buf.capacity < nbytes:
            if buf is not None:
                self._cuda.synchronize(self._stream)  # the old buffer may still be in use
                self._free(buf)
                self._drop_graphs()
            # grow with head-room (x1.5) but never beyond what the profile's max needs
            want = nbytes if buf is None else int(nbytes * 1.5)
            cap = self._max_bytes(name, self._np_dtype[name].itemsize)
            want = max(nbytes, min(want, cap) if cap else want)
            buf = bufs[name] = self._alloc(want)
        return buf

    def _ensure_slot(self, slots: list, i: int, nbytes: int) -> _Buffer:
        buf = slots[i]
        if buf is None or buf.capacity < nbytes:
            if buf is not None:
                self._cuda.synchronize(self._stream)
                self._free(buf)
                self._drop_graphs()
            want = nbytes if buf is None else int(nbytes * 1.5)
            buf = slots[i] = self._alloc(want)
        return buf

    def _drop_graphs(self) -> None:
        for g in self._graphs.values():
            self._cuda.graph_destroy(g)
        self._graphs.clear()
        self._seen.clear()

    def _enqueue(self, feeds, result) -> None:
        """Enqueue between two CUDA events (read later by ``_collect``: no sync here)."""
        start = self._events.pop() if self._events else self._cuda.event_create()
        end = self._events.pop() if self._events else self._cuda.event_create()
        self._cuda.event_record(start, self._stream)
        self._enqueue_work(feeds, result)
        self._cuda.event_record(end, self._stream)
        self._pending.append((start, end))
        if len(self._pending) >= 64:  # bound the number of live events
            self._collect()

    def _collect(self) -> None:
        """Add the elapsed time of every recorded (start, end) pair; recycle the events."""
        for start, end in self._pending:
            self._cuda.event_synchronize(end)
            self._dev_ms += self._cuda.event_elapsed_ms(start, end)
            self._dev_runs += 1
            self._events += [start, end]
        self._pending.clear()

    def _enqueue_work(self, feeds, result) -> None:
        ctx = self.context
        if not self.cuda_graph:
            if not ctx.execute_async_v3(self._stream):
                raise ToolkitError("TensorRT execution failed (execute_async_v3 returned False)")
            return
        sig = (
            tuple(
                (
                    t.name,
                    tuple(
                        np.shape(feeds[t.name])
                        if not isinstance(feeds[t.name], DeviceTensor)
                        else feeds[t.name].shape
                    ),
                )
                for t in self._in
            )
            + tuple((n, d.ptr) for n, d in result.items())
            + tuple((n, b.ptr) for n, b in self._in_bufs.items())
        )
        graph = self._graphs.get(sig)
        if graph is not None:
            self._cuda.graph_launch(graph, self._stream)
            return
        # TensorRT needs one regular enqueue for a shape before it can be captured
        if not ctx.execute_async_v3(self._stream):
            raise ToolkitError("TensorRT execution failed (execute_async_v3 returned False)")
        if sig in self._seen:
            self._cuda.synchronize(self._stream)
            self._cuda.graph_capture_begin(self._stream)
            ok = ctx.execute_async_v3(self._stream)
            graph = self._cuda.graph_capture_end(self._stream)
            if not ok:
                raise ToolkitError("TensorRT execution failed during CUDA graph capture")
            self._graphs[sig] = graph
        self._seen.add(sig)

    def _download(self, t: DeviceTensor, sync: bool = True) -> np.ndarray:
        host = np.empty(t.shape, dtype=t.dtype)
        if host.nbytes:
            self._cuda.dtoh(host, t.ptr, self._stream)
        if sync:
            self._cuda.synchronize(self._stream)
        return host
