"""A strict test double of Triton's Python backend module (``import triton_python_backend_utils
as pb_utils``) and of the server around a Python model, for running a repository written by
``toolkit export-triton`` without Triton.

The module handed to the model (``Server.module``) holds only names the real one has, with
the real parameter names (checked against triton-inference-server/python_backend:
``src/pb_stub.cc`` and ``src/resources/triton_python_backend_utils.py``):
``Tensor(name, numpy_array)`` with ``name() as_numpy() is_cpu() shape()``;
``InferenceRequest(request_id="", correlation_id=0, inputs, requested_output_names, model_name,
model_version=-1, flags=0, timeout=0, preferred_memory=..., trace=..., parameters=None)`` with
``inputs() requested_output_names() request_id() exec(decoupled=False)``;
``InferenceResponse(output_tensors=[], error=None, parameters=None)`` with
``output_tensors() has_error() error()``; ``TritonError(message, code=INTERNAL)`` with
``message() code()``; ``PreferredMemory(preferred_memory_type, preferred_device_id=0)``,
``TRITONSERVER_MEMORY_CPU/GPU``; ``get_input_tensor_by_name``, ``get_output_tensor_by_name``,
``TritonModelException``, ``Logger``. Every class uses ``__slots__`` and arguments are
type-checked as pybind11 would, so a misspelled or wrong call fails.

``Server(repository)`` plays Triton: it parses every ``config.pbtxt`` with Triton's own
protobuf definitions (``model_config_pb2.ModelConfig``, strict: an unknown field fails), opens
every ``onnxruntime_onnx`` model's ``1/model.onnx`` with the toolkit's onnxruntime Session, and
on ``InferenceRequest.exec()`` checks the request against the model's config as Triton does —
known model, known input names, every non-optional input present, data types, ranks (plus the
batch dim when ``max_batch_size`` > 0, at most ``max_batch_size``), static dims, requested
outputs that exist — before running it; a failed check is an error response, like Triton's.
Outputs are checked against the config too (type, rank, static dims) and only the requested
ones are returned. ``tensorrt_plan`` models are parsed but cannot run here.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from toolkit.runtime.session import OrtSession

MODULE_NAME = "triton_python_backend_utils"
CALLS: list = []      # (model name, {input name: shape}) of every request a model ran

# Triton data types -> numpy (TYPE_STRING: object arrays of bytes)
NUMPY = {"TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8,
         "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
         "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
         "TYPE_STRING": np.object_}


def _check(value, cls, what):
    if not isinstance(value, cls):
        raise TypeError(f"{what}: incompatible function arguments (got {value!r}, expected "
                        f"{getattr(cls, '__name__', cls)})")


# --------------------------------------------------------------------------------------------
# the module's classes
# --------------------------------------------------------------------------------------------

class TritonError:
    __slots__ = ("_message", "_code")

    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, \
        CANCELLED = range(8)

    def __init__(self, message, code=1):
        _check(message, str, "TritonError.__init__(message)")
        _check(code, int, "TritonError.__init__(code)")
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self):
        return f"TritonError({self._message!r})"


class TritonModelException(Exception):
    pass


class MemoryType(enum.Enum):
    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU


class PreferredMemory:
    __slots__ = ("preferred_memory_type", "preferred_device_id")

    def __init__(self, preferred_memory_type, preferred_device_id=0):
        _check(preferred_memory_type, MemoryType, "PreferredMemory.__init__()")
        _check(preferred_device_id, int, "PreferredMemory.__init__()")
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class Tensor:
    """A host tensor (``is_cpu()`` always: outputs are asked for in CPU memory)."""

    __slots__ = ("_name", "_array")

    def __init__(self, name, array):
        _check(name, str, "Tensor.__init__(name)")
        _check(array, np.ndarray, "Tensor.__init__(numpy_array)")
        if array.dtype == np.object_:
            bad = [v for v in array.flat if not isinstance(v, (bytes, str))]
            if bad:
                raise TypeError(f"Tensor {name}: object arrays must hold bytes or str")
        elif array.dtype.type not in set(NUMPY.values()):
            raise TypeError(f"Tensor {name}: unsupported numpy dtype {array.dtype}")
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def is_cpu(self) -> bool:
        return True

    def shape(self) -> list[int]:
        return list(self._array.shape)


class InferenceResponse:
    __slots__ = ("_outputs", "_error", "_parameters")

    def __init__(self, output_tensors=None, error=None, parameters=None):
        output_tensors = [] if output_tensors is None else output_tensors
        _check(output_tensors, list, "InferenceResponse.__init__(output_tensors)")
        for t in output_tensors:
            _check(t, Tensor, "InferenceResponse.__init__(output_tensors)")
        if error is not None:
            _check(error, TritonError, "InferenceResponse.__init__(error)")
        self._outputs = output_tensors
        self._error = error
        self._parameters = parameters

    def output_tensors(self) -> list:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self):
        return self._error


class InferenceRequest:
    __slots__ = ("_inputs", "_outputs", "_model", "_request_id", "_version", "_memory")

    def __init__(self, request_id="", correlation_id=0, *, inputs, requested_output_names,
                 model_name, model_version=-1, flags=0, timeout=0, preferred_memory=None,
                 trace=None, parameters=None):
        _check(request_id, str, "InferenceRequest.__init__(request_id)")
        _check(inputs, list, "InferenceRequest.__init__(inputs)")
        for t in inputs:
            _check(t, Tensor, "InferenceRequest.__init__(inputs)")
        _check(requested_output_names, list, "InferenceRequest.__init__(requested_output_names)")
        for n in requested_output_names:
            _check(n, str, "InferenceRequest.__init__(requested_output_names)")
        _check(model_name, str, "InferenceRequest.__init__(model_name)")
        _check(model_version, int, "InferenceRequest.__init__(model_version)")
        if preferred_memory is not None:
            _check(preferred_memory, PreferredMemory, "InferenceRequest.__init__(preferred_memory)")
        self._inputs = inputs
        self._outputs = requested_output_names
        self._model = model_name
        self._request_id = request_id
        self._version = model_version
        self._memory = preferred_memory

    def inputs(self) -> list:
        return self._inputs

    def requested_output_names(self) -> list:
        return self._outputs

    def request_id(self) -> str:
        return self._request_id

    def exec(self, decoupled=False):
        _check(decoupled, bool, "InferenceRequest.exec(decoupled)")
        if decoupled:
            raise TypeError("the double does not do decoupled models")
        if SERVER is None:
            raise RuntimeError("no Server is installed")
        return SERVER.infer(self._model, self._inputs, self._outputs)


def get_input_tensor_by_name(inference_request, name):
    for t in inference_request.inputs():
        if t.name() == name:
            return t
    return None


def get_output_tensor_by_name(inference_response, name):
    for t in inference_response.output_tensors():
        if t.name() == name:
            return t
    return None


class Logger:
    __slots__ = ()
    LINES: list = []

    @staticmethod
    def log_info(message):
        Logger.LINES.append(("info", message))

    @staticmethod
    def log_warn(message):
        Logger.LINES.append(("warn", message))

    @staticmethod
    def log_error(message):
        Logger.LINES.append(("error", message))

    @staticmethod
    def log_verbose(message):
        Logger.LINES.append(("verbose", message))


PUBLIC = ("Tensor", "InferenceRequest", "InferenceResponse", "TritonError",
          "TritonModelException", "PreferredMemory", "TRITONSERVER_MEMORY_GPU",
          "TRITONSERVER_MEMORY_CPU", "get_input_tensor_by_name", "get_output_tensor_by_name",
          "Logger")


def module() -> types.ModuleType:
    """A ``triton_python_backend_utils`` holding only the real module's names."""
    mod = types.ModuleType(MODULE_NAME)
    for name in PUBLIC:
        setattr(mod, name, globals()[name])
    return mod


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------

SERVER: "Server | None" = None


def parse_config(path: Path):
    """config.pbtxt as Triton reads it (unknown fields, bad enums: ParseError)."""
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def _dtype_name(cfg_type: int) -> str:
    return model_config_pb2.DataType.Name(cfg_type)


def _check_tensor(model, tensor_cfg, array: np.ndarray, what: str) -> str | None:
    """Why ``array`` does not fit the config's input/output (None if it does)."""
    want = _dtype_name(tensor_cfg.data_type)
    if want == "TYPE_STRING":
        if array.dtype != np.object_:
            return f"{what} '{tensor_cfg.name}' of model '{model.name}' is {want}, got {array.dtype}"
    elif array.dtype != NUMPY[want]:
        return (f"{what} '{tensor_cfg.name}' of model '{model.name}' has data type {want}, got "
                f"{array.dtype}")
    dims = list(tensor_cfg.dims)
    if model.max_batch_size > 0:
        if array.ndim < 1 or not 1 <= array.shape[0] <= model.max_batch_size:
            return (f"{what} '{tensor_cfg.name}' of model '{model.name}': batch size "
                    f"{array.shape[0] if array.ndim else None} is not in 1..{model.max_batch_size}")
        shape = list(array.shape[1:])
    else:
        shape = list(array.shape)
    if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape)):
        return (f"unexpected shape for {what} '{tensor_cfg.name}' for model '{model.name}'. "
                f"Expected {dims}, got {list(array.shape)}")
    return None


class Server:
    """A repository loaded as Triton would (configs) and run as the double can (onnxruntime)."""

    def __init__(self, repository: str | Path):
        self.repository = Path(repository)
        self.configs = {}
        self.sessions = {}
        for cfg_path in sorted(self.repository.glob("*/config.pbtxt")):
            cfg = parse_config(cfg_path)
            if cfg.name != cfg_path.parent.name:
                raise ValueError(f"{cfg_path}: name {cfg.name!r} is not its directory's name")
            self.configs[cfg.name] = cfg
            if cfg.platform == "onnxruntime_onnx":
                sess = OrtSession(cfg_path.parent / "1" / "model.onnx")
                # Triton's onnxruntime backend refuses a config that does not match the graph
                for kind, tensors, infos in (("input", cfg.input, sess.inputs),
                                             ("output", cfg.output, sess.outputs)):
                    if sorted(t.name for t in tensors) != sorted(i.name for i in infos):
                        raise ValueError(f"model {cfg.name}: config {kind}s do not match the "
                                         "ONNX graph")
                self.sessions[cfg.name] = sess

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()

    # -- Triton's request checks and execution ------------------------------------------------
    def _check_request(self, model, inputs: list, requested: list) -> str | None:
        known = {t.name: t for t in model.input}
        given = {}
        for t in inputs:
            if t.name() not in known:
                return f"unexpected inference input '{t.name()}' for model '{model.name}'"
            if t.name() in given:
                return f"input '{t.name()}' given twice for model '{model.name}'"
            given[t.name()] = t.as_numpy()
        missing = [n for n, c in known.items() if not c.optional and n not in given]
        if missing:
            return f"expected {len(known)} inputs but got {len(given)} inputs for model " \
                   f"'{model.name}'; missing {missing}"
        batches = {a.shape[0] for a in given.values() if a.ndim} if model.max_batch_size else set()
        if len(batches) > 1:
            return f"inputs of one request to model '{model.name}' differ in batch size"
        for name, a in given.items():
            why = _check_tensor(model, known[name], a, "input")
            if why:
                return why
        outputs = {t.name for t in model.output}
        unknown = [n for n in requested if n not in outputs]
        if unknown:
            return f"unexpected inference output {unknown} for model '{model.name}'"
        return None

    def infer(self, model_name: str, inputs: list, requested: list) -> InferenceResponse:
        """A BLS request to a model of the repository, as Triton answers it."""
        model = self.configs.get(model_name)
        if model is None:
            return InferenceResponse(error=TritonError(
                f"Request for unknown model: '{model_name}' is not found", TritonError.NOT_FOUND))
        why = self._check_request(model, inputs, requested)
        if why:
            return InferenceResponse(error=TritonError(why, TritonError.INVALID_ARG))
        sess = self.sessions.get(model_name)
        if sess is None:
            return InferenceResponse(error=TritonError(
                f"the double cannot run model '{model_name}' ({model.platform or model.backend})",
                TritonError.UNAVAILABLE))
        feeds = {t.name(): t.as_numpy() for t in inputs}
        CALLS.append((model_name, {k: tuple(v.shape) for k, v in feeds.items()}))
        out = sess.run(feeds)
        cfg_out = {t.name: t for t in model.output}
        for name, a in out.items():
            why = _check_tensor(model, cfg_out[name], a, "output")
            assert why is None, why   # the config does not describe what the graph returns
        return InferenceResponse(output_tensors=[Tensor(n, out[n]) for n in requested])

    # -- a Python model ------------------------------------------------------------------------
    def initialize_args(self, name: str) -> dict:
        """``args`` of ``initialize`` as Triton passes them: strings only, the config as JSON."""
        cfg = json_format.MessageToDict(self.configs[name], preserving_proto_field_name=True)
        for tensors in (cfg.get("input", []), cfg.get("output", [])):
            for t in tensors:   # Triton writes int64 dims as numbers, protobuf as strings
                t["dims"] = [int(d) for d in t.get("dims", [])]
        return {"model_config": json.dumps(cfg), "model_instance_kind": "CPU",
                "model_instance_device_id": "0",
                "model_repository": str(self.repository / name), "model_version": "1",
                "model_name": name}

    def load_python_model(self, name: str):
        """Import ``<name>/1/model.py`` by path and ``initialize`` it (the double installed)."""
        cfg = self.configs[name]
        assert cfg.backend == "python", f"{name} is not a Python model"
        path = self.repository / name / "1" / "model.py"
        spec = importlib.util.spec_from_file_location(
            "triton_model_" + re.sub(r"\W", "_", name), path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        model = mod.TritonPythonModel()
        model.initialize(self.initialize_args(name))
        return model

    def execute(self, name: str, model, requests: list) -> list:
        """Triton's path to a Python model: requests that fail the config's checks are
        answered with an error and never reach ``execute``; the responses are checked."""
        cfg = self.configs[name]
        answers: list = [None] * len(requests)
        passed = []
        for i, r in enumerate(requests):
            why = self._check_request(cfg, r.inputs(), r.requested_output_names())
            if why:
                answers[i] = InferenceResponse(error=TritonError(why, TritonError.INVALID_ARG))
            else:
                passed.append(i)
        responses = model.execute([requests[i] for i in passed])
        assert isinstance(responses, list) and len(responses) == len(passed), \
            "execute must return one response per request"
        cfg_out = {t.name: t for t in cfg.output}
        for i, resp in zip(passed, responses):
            assert isinstance(resp, InferenceResponse), resp
            if not resp.has_error():
                for t in resp.output_tensors():
                    assert t.name() in cfg_out, f"output {t.name()} is not in the config"
                    why = _check_tensor(cfg, cfg_out[t.name()], t.as_numpy(), "output")
                    assert why is None, why
            answers[i] = resp
        return answers

    @contextlib.contextmanager
    def installed(self):
        """``sys.modules['triton_python_backend_utils']`` = the double, requests to this
        server; both undone afterwards."""
        global SERVER
        old_mod, old_server = sys.modules.get(MODULE_NAME), SERVER
        sys.modules[MODULE_NAME] = module()
        SERVER = self
        CALLS.clear()
        try:
            yield sys.modules[MODULE_NAME]
        finally:
            SERVER = old_server
            if old_mod is None:
                sys.modules.pop(MODULE_NAME, None)
            else:
                sys.modules[MODULE_NAME] = old_mod


def request(inputs: dict, outputs=("TEXT", "SEGMENTS"), model_name: str = "") -> InferenceRequest:
    """A client's request to a Python model: ``{name: array}`` (strings: object arrays)."""
    return InferenceRequest(inputs=[Tensor(n, a) for n, a in inputs.items()],
                            requested_output_names=list(outputs), model_name=model_name)
