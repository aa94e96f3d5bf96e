"""Strict test doubles of TensorRT 10 and TensorRT 11's Python API (``import tensorrt as trt``)
and of the CUDA runtime layer used by ``toolkit.runtime.tensorrt``.

Each double is **generated** from ``trt_api.json`` (written by ``gen_trt_api.py`` from the
pybind11 binding sources of NVIDIA/TensorRT at a release tag): ``module("10.3")`` or
``module("11.1")`` exposes exactly that release's enums (members and values), classes, methods
(checked against each overload's parameter names), properties (read-only where the bindings
say so) and module functions, and nothing else. A name the release lacks raises
AttributeError (``trt.BuilderFlag.FP16`` on 11, ``layer.precision`` on 11, ...); a name it has
but the double does not model raises NotImplementedError saying so. Instances have no
``__dict__``: setting a misspelled attribute raises AttributeError, as on the real objects.

The behaviour behind the names (the ``_*`` model classes below) is shared by the versions:

- the ONNX parser reads the graph with ``onnx`` (types from shape inference; ``UNSUPPORTED_OPS``
  makes chosen ops fail with the real ``ParserError`` fields);
- the builder records what it was asked (``CALLS``) and "builds" a JSON plan that remembers the
  ONNX file, the network's typing and the precision the engine would run; rules the headers
  document are enforced: strongly typed networks reject ``layer.precision`` /
  ``set_output_type`` (NvInfer.h, TensorRT 10), a dynamic input without a profile fails, a plan
  from another TensorRT version does not deserialize;
- executing an engine runs that ONNX graph with onnxruntime on the CPU, reading and writing the
  fake device memory of ``FakeCuda`` — so the session's binding, buffer and stream logic is
  exercised end to end with real numbers.
"""

from __future__ import annotations

import enum
import functools
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

API = json.loads(Path(__file__).with_name("trt_api.json").read_text())
TRT10, TRT11 = "10.3", "11.1"  # the releases the two doubles are generated from
LABELS = (TRT10, TRT11)
VERSION = {"10.3": "10.3.0", "10.16": "10.16.0", "11.1": "11.1.0"}
CALLS: list = []  # (what, details) recorded by the double
UNSUPPORTED_OPS: set = set()  # ops the fake parser reports as errors
DEVICE: "FakeCuda | None" = None  # the fake device memory engines execute against
ACTIVATION_BYTES = 3 << 20  # what every fake engine reports as device_memory_size_v2
PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")

_NP = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}
_ONNX2TRT = {
    1: "FLOAT",
    10: "HALF",
    7: "INT64",
    6: "INT32",
    9: "BOOL",
    3: "INT8",
    2: "UINT8",
    16: "BF16",
}
_OP2LAYER = {
    "LayerNormalization": "NORMALIZATION",
    "Softmax": "SOFTMAX",
    "MatMul": "MATRIX_MULTIPLY",
    "Gemm": "MATRIX_MULTIPLY",
    "Add": "ELEMENTWISE",
    "Sub": "ELEMENTWISE",
    "Mul": "ELEMENTWISE",
    "Div": "ELEMENTWISE",
    "Pow": "ELEMENTWISE",
    "Relu": "ACTIVATION",
    "Sigmoid": "ACTIVATION",
    "Tanh": "ACTIVATION",
    "Where": "SELECT",
    "ReduceMean": "REDUCE",
    "ReduceSum": "REDUCE",
    "Sqrt": "UNARY",
    "Exp": "UNARY",
    "Erf": "UNARY",
    "Cast": "CAST",
    "Constant": "CONSTANT",
    "Shape": "SHAPE",
    "Reshape": "SHUFFLE",
    "Transpose": "SHUFFLE",
    "Concat": "CONCATENATION",
    "Gather": "GATHER",
    "Slice": "SLICE",
    "QuantizeLinear": "QUANTIZE",
    "DequantizeLinear": "DEQUANTIZE",
    "Conv": "CONVOLUTION",
    "If": "CONDITION",
}


def _check(value, cls, what):
    if not isinstance(value, cls):
        raise TypeError(
            f"{what}: incompatible function arguments (got {value!r}, expected {cls.__name__})"
        )


# ============================================================================ behaviour models
# Each model class holds the behaviour of one binding class; ``_slots`` are its private state.
# Only the members the release's listing names are copied onto the generated class.


class _ILogger:
    _slots = ()

    def __init__(self):
        pass

    def log(self, severity, msg):
        CALLS.append(("log", (severity, msg)))


class _Logger:
    _slots = ("_min_severity",)

    def __init__(self, min_severity=None):
        sev = self._mod.ILogger.Severity
        if min_severity is None:
            min_severity = sev.WARNING
        _check(min_severity, sev, "Logger()")
        self._min_severity = min_severity

    @property
    def min_severity(self):
        return self._min_severity

    @min_severity.setter
    def min_severity(self, value):
        _check(value, self._mod.ILogger.Severity, "Logger.min_severity")
        self._min_severity = value


class _ITensor:
    _slots = ("_name", "_shape", "_dtype", "_is_input", "_is_output")

    def _setup(self, name, shape, dtype):
        self._name, self._shape, self._dtype = name, tuple(shape), dtype
        self._is_input = self._is_output = False

    name = property(lambda self: self._name)
    shape = property(lambda self: self._shape)
    is_network_input = property(lambda self: self._is_input)
    is_network_output = property(lambda self: self._is_output)

    @property
    def dtype(self):
        return self._dtype

    @dtype.setter
    def dtype(self, value):  # TensorRT 10 only (read-only in 11)
        _check(value, self._mod.DataType, "ITensor.dtype")
        self._dtype = value


class _ILayer:
    _slots = ("_name", "_type", "_inputs", "_outputs", "_precision", "_out_types", "_network")

    def _setup(self, network, name, type, inputs, outputs):
        self._network, self._name, self._type = network, name, type
        self._inputs, self._outputs = inputs, outputs
        self._precision, self._out_types = None, {}

    name = property(lambda self: self._name)
    type = property(lambda self: self._type)
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    # ---- TensorRT 10 only: weakly typed precision controls
    @property
    def precision(self):
        return self._precision or self._mod.DataType.FLOAT

    @precision.setter
    def precision(self, value):
        _check(value, self._mod.DataType, "ILayer.precision")
        if self._network._strongly_typed:  # NvInfer.h: strongly-typed networks reject setPrecision
            self._network._errors.append(f"{self._name}: setPrecision on a strongly typed network")
        self._precision = value

    precision_is_set = property(lambda self: self._precision is not None)

    def set_output_type(self, index, dtype):
        _check(dtype, self._mod.DataType, "ILayer.set_output_type()")
        if not 0 <= index < len(self._outputs):
            raise IndexError(index)
        if self._network._strongly_typed:  # NvInfer.h: ... reject calls to setOutputType
            self._network._errors.append(f"{self._name}: setOutputType on a strongly typed network")
        self._out_types[index] = dtype

    def get_output_type(self, index):
        return self._out_types.get(index, self._outputs[index].dtype)

    def output_type_is_set(self, index):
        return index in self._out_types


class _INetworkDefinition:
    _slots = (
        "_layers",
        "_inputs",
        "_outputs",
        "_flags",
        "_onnx_path",
        "_strongly_typed",
        "_errors",
    )

    def _setup(self, flags, strongly_typed):
        self._layers, self._inputs, self._outputs = [], [], []
        self._flags, self._onnx_path, self._strongly_typed, self._errors = (
            flags,
            None,
            strongly_typed,
            [],
        )

    flags = property(lambda self: self._flags)
    num_layers = property(lambda self: len(self._layers))
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_layer(self, index):
        return self._layers[index]

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]


class _ParserError:
    _slots = ("_code", "_desc", "_node", "_name", "_op")

    def _setup(self, code, desc, node, name, op):
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, name, op

    def code(self):
        return self._code

    def desc(self):
        return self._desc

    def file(self):
        return "ModelImporter.cpp"

    def func(self):
        return "parseNode"

    def line(self):
        return 0

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def local_function_stack(self):
        return []

    def local_function_stack_size(self):
        return 0


class _OnnxParser:
    _slots = ("_network", "_errors")

    def __init__(self, network, logger):
        _check(network, self._mod.INetworkDefinition, "OnnxParser()")
        _check(logger, self._mod.ILogger, "OnnxParser()")
        self._network, self._errors = network, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index):
        return self._errors[index]

    def clear_errors(self):
        self._errors.clear()

    def parse_from_file(self, model):
        import onnx

        _check(model, str, "OnnxParser.parse_from_file()")
        CALLS.append(("parse_from_file", model))
        g = onnx.shape_inference.infer_shapes(onnx.load(model)).graph
        types_ = {}
        for v in list(g.value_info) + list(g.input) + list(g.output):
            t = v.type.tensor_type
            types_[v.name] = (
                _ONNX2TRT.get(t.elem_type, "FLOAT"),
                tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim),
            )
        self._fill(g, types_, model)
        return not self._errors

    def _fill(self, g, types_, path):
        mod, net = self._mod, self._network
        tensors = {}

        def tensor(name):
            if name not in tensors:
                dt, shape = types_.get(name, ("FLOAT", ()))
                tensors[name] = mod.ITensor._new(name, shape, getattr(mod.DataType, dt))
            return tensors[name]

        inits = {i.name for i in g.initializer}
        net._onnx_path = path
        for v in g.input:
            if v.name not in inits:
                tensor(v.name)._is_input = True
                net._inputs.append(tensor(v.name))
        for i, n in enumerate(g.node):
            if n.op_type in UNSUPPORTED_OPS:
                self._errors.append(
                    mod.ParserError._new(
                        mod.ErrorCode.UNSUPPORTED_NODE,
                        f"No importer registered for op: {n.op_type}",
                        i,
                        n.name,
                        n.op_type,
                    )
                )
                continue
            ltype = getattr(mod.LayerType, _OP2LAYER.get(n.op_type, "PLUGIN_V3"))
            ins = [tensor(x) for x in n.input if x and x not in inits]
            outs = [tensor(x) for x in n.output if x]
            net._layers.append(mod.ILayer._new(net, n.name, ltype, ins, outs))
        for v in g.output:
            tensor(v.name)._is_output = True
            net._outputs.append(tensor(v.name))


class _IHostMemory:
    _slots = ("_data",)

    def _setup(self, data: bytes):
        self._data = bytes(data)

    nbytes = property(lambda self: len(self._data))

    def __bytes__(self):  # the real class has the buffer protocol
        return self._data

    def __buffer__(self, flags):  # Python >= 3.12 buffer protocol
        return memoryview(self._data)


class _ITimingCache:
    _slots = ("_data",)

    def _setup(self, data: bytes):
        self._data = bytes(data)

    def serialize(self):
        return self._mod.IHostMemory._new(self._data)

    def combine(self, input_cache, ignore_mismatch):
        return True

    def reset(self):
        self._data = b""
        return True


class _IOptimizationProfile:
    _slots = ("_shapes",)

    def _setup(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):
        _check(input, str, "IOptimizationProfile.set_shape()")
        if not (len(min) == len(opt) == len(max)):
            raise ValueError("min/opt/max ranks differ")
        self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, input):
        return list(self._shapes[input])

    def __bool__(self):
        return True

    __nonzero__ = __bool__


class _IBuilderConfig:
    _slots = ("_flags", "_pools", "_profiles", "_timing_cache")

    def _setup(self):
        self._flags, self._pools, self._profiles, self._timing_cache = set(), {}, [], None

    def set_memory_pool_limit(self, pool, pool_size):
        _check(pool, self._mod.MemoryPoolType, "set_memory_pool_limit()")
        self._pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self._pools.get(pool, 0)

    def set_flag(self, flag):
        _check(flag, self._mod.BuilderFlag, "set_flag()")
        self._flags.add(flag)

    def get_flag(self, flag):
        _check(flag, self._mod.BuilderFlag, "get_flag()")
        return flag in self._flags

    def clear_flag(self, flag):
        self._flags.discard(flag)

    def add_optimization_profile(self, profile):
        _check(profile, self._mod.IOptimizationProfile, "add_optimization_profile()")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(serialized_timing_cache)
        CALLS.append(("create_timing_cache", data))
        return self._mod.ITimingCache._new(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        _check(cache, self._mod.ITimingCache, "set_timing_cache()")
        _check(ignore_mismatch, type(True), "set_timing_cache()")
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache


class _Builder:
    _slots = ("_logger",)

    def __init__(self, logger):
        _check(logger, self._mod.ILogger, "Builder()")
        self._logger = logger

    def create_network(self, flags=0):
        _check(flags, int, "create_network()")
        mod = self._mod
        members = {f.name: int(f) for f in mod.NetworkDefinitionCreationFlag}
        if flags & ~sum(1 << v for v in set(members.values())):
            raise ValueError(f"create_network(): unknown flag bits in {flags:#x}")
        strong = bool(flags >> members["STRONGLY_TYPED"] & 1)
        if mod._major >= 11:
            if strong:  # NvInfer.h 11: deprecated, "retained for API compatibility but is ignored"
                CALLS.append(("deprecated", "NetworkDefinitionCreationFlag.STRONGLY_TYPED"))
            strong = True
        return mod.INetworkDefinition._new(flags, strong)

    def create_builder_config(self):
        return self._mod.IBuilderConfig._new()

    def create_optimization_profile(self):
        return self._mod.IOptimizationProfile._new()

    def build_serialized_network(self, network, config):
        mod = self._mod
        _check(network, mod.INetworkDefinition, "build_serialized_network()")
        _check(config, mod.IBuilderConfig, "build_serialized_network()")
        flags = sorted(f.name for f in config._flags)
        pinned = {
            layer._name: {
                "precision": layer._precision.name,
                "outputs": {i: t.name for i, t in layer._out_types.items()},
            }
            for layer in network._layers
            if layer._precision is not None
        }
        profile = config._profiles[0]._shapes if config._profiles else {}
        dynamic = [t._name for t in network._inputs if any(d < 0 for d in t._shape)]
        prec_flags = [f for f in flags if f in PRECISION_FLAGS]
        CALLS.append(
            (
                "build_serialized_network",
                {
                    "flags": flags,
                    "strongly_typed": network._strongly_typed,
                    "network_flags": network._flags,
                    "pools": {p.name: v for p, v in config._pools.items()},
                    "profiles": [p._shapes for p in config._profiles],
                    "pinned": pinned,
                },
            )
        )
        if network._strongly_typed and prec_flags:
            CALLS.append(("warning", f"precision flags {prec_flags} on a strongly typed network"))
        if network._errors or any(n not in profile for n in dynamic):
            return None  # real TensorRT: an API-usage error, or "dynamic inputs, but no profile"
        if config._timing_cache is not None:
            config._timing_cache._data += b"tactics;"
        return mod.IHostMemory._new(
            b"FAKEPLAN" + json.dumps(_plan(network, profile, prec_flags, mod.__version__)).encode()
        )


def _plan(network, profile, prec_flags, version) -> dict:
    """The fake engine: I/O, profile and the precision it would run (types or flags)."""
    kinds = {t._dtype.name for layer in network._layers for t in layer._outputs}
    qdq = any(layer._type.name == "QUANTIZE" for layer in network._layers)
    if network._strongly_typed:
        runs = "int8" if qdq else "fp16" if "HALF" in kinds else "fp32"
    else:
        runs = (
            "int8" if qdq and "INT8" in prec_flags else "fp16" if "FP16" in prec_flags else "fp32"
        )
    return {
        "onnx": network._onnx_path,
        "tensorrt": version,
        "strongly_typed": network._strongly_typed,
        "runs": runs,
        "inputs": [[t._name, list(t._shape), t._dtype.name] for t in network._inputs],
        "outputs": [[t._name, list(t._shape), t._dtype.name] for t in network._outputs],
        "profile": {k: [list(s) for s in v] for k, v in profile.items()},
    }


class _IStreamReaderV2:
    _slots = ()

    def __init__(self):
        pass


class _IStreamReader:
    _slots = ()

    def __init__(self):
        pass


class _Runtime:
    _slots = ("_logger",)

    def __init__(self, logger):
        _check(logger, self._mod.ILogger, "Runtime()")
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        mod = self._mod
        reader_v2 = getattr(mod, "IStreamReaderV2", None)
        if reader_v2 is not None and isinstance(serialized_engine, reader_v2):
            data = _read_stream(serialized_engine, mod)
        elif isinstance(serialized_engine, (bytes, bytearray, memoryview, mod.IHostMemory)):
            data = bytes(serialized_engine)
            CALLS.append(("deserialize", {"bytes": len(data)}))
        else:
            raise TypeError(
                f"deserialize_cuda_engine(): incompatible function arguments "
                f"({type(serialized_engine).__name__})"
            )
        if not data.startswith(b"FAKEPLAN"):
            return None
        plan = json.loads(data[8:])
        if plan["tensorrt"] != mod.__version__:
            return None  # "The engine plan file is not compatible with this version of TensorRT"
        return mod.ICudaEngine._new(plan)


def _read_stream(reader, mod) -> bytes:
    """What TensorRT does with an IStreamReaderV2: read(num_bytes, stream) until done."""
    reader.seek(0, mod.SeekPosition.SET)
    parts, calls = [], 0
    while True:
        chunk = bytes(reader.read(1 << 30, 0))
        calls += 1
        if not chunk:
            break
        parts.append(chunk)
    CALLS.append(("deserialize", {"stream_reader_v2_reads": calls}))
    return b"".join(parts)


class _ICudaEngine:
    _slots = ("_plan", "_io", "_sess")

    def _setup(self, plan):
        mod = self._mod
        self._plan = plan
        self._io = [
            (n, s, getattr(mod.DataType, d), mod.TensorIOMode.INPUT) for n, s, d in plan["inputs"]
        ] + [
            (n, s, getattr(mod.DataType, d), mod.TensorIOMode.OUTPUT) for n, s, d in plan["outputs"]
        ]
        self._sess = None

    num_io_tensors = property(lambda self: len(self._io))
    num_optimization_profiles = property(lambda self: 1)
    device_memory_size = property(lambda self: ACTIVATION_BYTES)  # TensorRT 10 only
    device_memory_size_v2 = property(lambda self: ACTIVATION_BYTES)

    def _find(self, name):
        _check(name, str, "ICudaEngine tensor name")
        for t in self._io:
            if t[0] == name:
                return t
        raise KeyError(name)

    def get_tensor_name(self, index):
        return self._io[index][0]

    def get_tensor_mode(self, name):
        return self._find(name)[3]

    def get_tensor_shape(self, name):
        return tuple(self._find(name)[1])

    def get_tensor_dtype(self, name):
        return self._find(name)[2]

    def get_tensor_profile_shape(self, name, profile_index):
        return [tuple(s) for s in self._plan["profile"][name]]

    def create_execution_context(self, strategy=None):
        return self._mod.IExecutionContext._new(self)


class _IExecutionContext:
    _slots = ("_engine", "_shapes", "_addr", "_outs")

    def _setup(self, engine):
        self._engine, self._shapes, self._addr, self._outs = engine, {}, {}, None

    engine = property(lambda self: self._engine)

    def set_input_shape(self, name, shape):
        e = self._engine
        _, eshape, _, mode = e._find(name)
        if mode != self._mod.TensorIOMode.INPUT or len(shape) != len(eshape):
            return False
        mn, _, mx = e._plan["profile"].get(name, (eshape, eshape, eshape))
        if any(s < a or s > b for s, a, b in zip(shape, mn, mx)):
            return False
        self._shapes[name] = tuple(int(s) for s in shape)
        self._outs = None
        return True

    def _inputs(self):
        return [(n, d) for n, _, d, m in self._engine._io if m == self._mod.TensorIOMode.INPUT]

    def _infer(self):
        if self._outs is None:
            self._outs = self._run(
                {n: np.zeros(self._shapes[n], _NP[d.name]) for n, d in self._inputs()}
            )
        return self._outs

    def _run(self, feeds):
        import onnxruntime as ort

        e = self._engine
        if e._sess is None:
            e._sess = ort.InferenceSession(e._plan["onnx"], providers=["CPUExecutionProvider"])
        names = [n for n, _, _, m in e._io if m == self._mod.TensorIOMode.OUTPUT]
        return dict(zip(names, e._sess.run(names, feeds)))

    def get_tensor_shape(self, name):
        _, eshape, _, mode = self._engine._find(name)
        if mode == self._mod.TensorIOMode.INPUT:
            return self._shapes.get(name, tuple(eshape))
        return tuple(self._infer()[name].shape)

    def set_tensor_address(self, name, memory):
        self._engine._find(name)
        _check(memory, int, "set_tensor_address()")
        self._addr[name] = memory
        return True

    def execute_async_v3(self, stream_handle):
        _check(stream_handle, int, "execute_async_v3()")
        dev, io, out_mode = DEVICE, self._engine._io, self._mod.TensorIOMode.OUTPUT
        shapes, addr, inputs = dict(self._shapes), dict(self._addr), self._inputs()

        def work():
            outs = self._run({n: dev.read(addr[n], shapes[n], _NP[d.name]) for n, d in inputs})
            for n, _, d, m in io:
                if m == out_mode:
                    dev.write(addr[n], outs[n].astype(_NP[d.name]))

        CALLS.append(("execute_async_v3", {n: addr.get(n) for n, *_ in io}))
        dev.enqueue(stream_handle, work)
        return True


def _nptype(mod):
    def nptype(trt_type):
        if not isinstance(trt_type, mod.DataType) or trt_type.name not in _NP:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return _NP[trt_type.name]

    return nptype


def _volume(mod):
    def volume(iterable):
        vol = 1
        for elem in iterable:
            vol *= elem
        return vol

    return volume


MODELS = {
    "ILogger": _ILogger,
    "Logger": _Logger,
    "ITensor": _ITensor,
    "ILayer": _ILayer,
    "INetworkDefinition": _INetworkDefinition,
    "ParserError": _ParserError,
    "OnnxParser": _OnnxParser,
    "IHostMemory": _IHostMemory,
    "ITimingCache": _ITimingCache,
    "IOptimizationProfile": _IOptimizationProfile,
    "IBuilderConfig": _IBuilderConfig,
    "Builder": _Builder,
    "Runtime": _Runtime,
    "ICudaEngine": _ICudaEngine,
    "IExecutionContext": _IExecutionContext,
    "IStreamReaderV2": _IStreamReaderV2,
    "IStreamReader": _IStreamReader,
}
FUNCTIONS = {"nptype": _nptype, "volume": _volume}  # factories: module -> function
KEEP_DUNDERS = ("__init__", "__bool__", "__nonzero__", "__bytes__", "__buffer__")


# ============================================================================ generation
class _TrtEnum(enum.Enum):
    """A pybind11 enum member: ``int(member)``, ``.name``, ``.value``."""

    def __int__(self):
        return self.value

    def __repr__(self):
        return f"<{type(self).__qualname__}.{self.name}: {self.value}>"


class NotModelled(NotImplementedError):
    pass


def _fits(params: list[str], args: tuple, kwargs: dict) -> bool:
    if not params:  # positional-only binding (no "x"_a annotations)
        return not kwargs
    names = [p.rstrip("=") for p in params]
    if len(args) > len(names) or any(k not in names[len(args) :] for k in kwargs):
        return False
    given = set(names[: len(args)]) | set(kwargs)
    return all(p.endswith("=") or p in given for p in params)


def _checked(qual: str, overloads: list, fn):
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        if not any(_fits(o, args, kwargs) for o in overloads):
            raise TypeError(
                f"{qual}(): incompatible function arguments; the supported "
                f"signatures are {overloads} (got {len(args)} positional, "
                f"keywords {sorted(kwargs)})"
            )
        return fn(self, *args, **kwargs)

    return call


def _not_modelled(label: str, qual: str):
    def stub(*args, **kwargs):
        raise NotModelled(
            f"TensorRT {label}: {qual} exists in the real bindings but this test "
            "double does not model it"
        )

    return stub


def _no_constructor(qual: str):
    def init(self, *args, **kwargs):
        raise TypeError(f"tensorrt.{qual}: No constructor defined!")

    return init


def _class_namespace(label: str, path: str, spec: dict, model, slots: tuple) -> dict:
    ns: dict = {"__slots__": slots, "__module__": "tensorrt", "__qualname__": path}
    for name, overloads in spec["methods"].items():
        qual = f"{path}.{name}"
        impl = model.__dict__.get(name) if model else None
        if name == "__del__" or (name.startswith("__") and impl is None and name != "__init__"):
            continue  # object defaults for dunders the double does not need
        if impl is None:
            ns[name] = (
                _no_constructor(path)
                if name == "__init__" and not overloads
                else _not_modelled(label, qual)
            )
        else:
            ns[name] = _checked(qual, overloads, impl)
    if "__init__" not in spec["methods"]:
        ns["__init__"] = _no_constructor(path)
    for name, overloads in spec["static"].items():
        ns[name] = staticmethod(_not_modelled(label, f"{path}.{name}"))
    for name, access in spec["properties"].items():
        impl = model.__dict__.get(name) if model else None
        if isinstance(impl, property):
            ns[name] = property(
                impl.fget if "r" in access else None, impl.fset if "w" in access else None
            )
        else:
            stub = _not_modelled(label, f"{path}.{name}")
            ns[name] = property(stub if "r" in access else None, stub if "w" in access else None)
    if spec.get("buffer_protocol") and model is not None:
        for name in ("__bytes__", "__buffer__"):
            if name in model.__dict__:
                ns[name] = model.__dict__[name]
    if model is not None:  # private helpers and state set-up
        ns.update(
            {
                k: v
                for k, v in model.__dict__.items()
                if k.startswith("_") and not k.startswith("__") and k != "_slots"
            }
        )
    return ns


def _make_classes(mod, label: str, api: dict) -> None:
    done: dict[str, type] = {}
    pending = dict(api["classes"])
    while pending:
        for path, spec in list(pending.items()):
            if any(b not in done for b in spec["bases"]):
                continue
            model = MODELS.get(path)
            inherited = {
                s
                for b in spec["bases"]
                for c in done[b].__mro__
                for s in getattr(c, "__slots__", ())
            }
            slots = tuple(s for s in (model._slots if model else ()) if s not in inherited)
            ns = _class_namespace(label, path, spec, model, slots)
            bases = tuple(done[b] for b in spec["bases"]) or (object,)
            cls = type(path.split(".")[-1], bases, ns)
            cls._mod = mod
            done[path] = cls
            del pending[path]
    for path, cls in done.items():
        setattr(mod, path, cls)


def _new(cls, *args):
    """Internal construction (objects TensorRT creates, which have no Python constructor)."""
    obj = object.__new__(cls)
    if hasattr(obj, "_setup"):
        obj._setup(*args)
    return obj


def _resolve(mod, dotted: str):
    obj = mod
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _make_enums(mod, api: dict) -> None:
    for path, spec in sorted(api["enums"].items(), key=lambda kv: "alias_of" in kv[1]):
        scope_path, _, name = path.rpartition(".")
        scope = _resolve(mod, scope_path) if scope_path else mod
        if "alias_of" in spec:
            setattr(scope, name, _resolve(mod, spec["alias_of"]))
            continue
        cls = _TrtEnum(name, list(spec["members"].items()), module="tensorrt", qualname=path)
        setattr(scope, name, cls)
        if spec["exported"]:
            for m in spec["members"]:
                setattr(scope, m, cls[m])


def module(label: str) -> types.ModuleType:
    """A fresh ``tensorrt`` module with exactly the API of release ``label`` (e.g. "11.1")."""
    api = API["versions"][label]
    mod = types.ModuleType(
        "tensorrt",
        f"TensorRT {label} test double (generated from "
        f"NVIDIA/TensorRT {api['tag']}, {api['commit'][:12]})",
    )
    mod.__version__ = VERSION[label]
    mod._major = int(label.split(".")[0])
    mod._label = label
    _make_classes(mod, label, api)
    for path in api["classes"]:
        getattr(mod, path)._new = classmethod(_new)
    _make_enums(mod, api)
    for name, overloads in api["functions"].items():
        factory = FUNCTIONS.get(name)
        setattr(mod, name, _not_modelled(label, name) if factory is None else factory(mod))
    for name, value in api["attributes"].items():
        setattr(mod, name, _resolve(mod, value))
    for path, spec in api["classes"].items():
        cls = getattr(mod, path)
        for attr, value in spec["attributes"].items():
            target = _resolve(mod, value)
            setattr(cls, attr, target if target is not None else (lambda *a, **k: None))
    return mod


def api_names(label: str) -> dict[str, set]:
    """Every public name the release's bindings define, per owner ("" = the module)."""
    api = API["versions"][label]
    names: dict[str, set] = {
        "": {
            n
            for n in set(api["classes"])
            | set(api["functions"])
            | set(api["attributes"])
            | {e for e in api["enums"] if "." not in e}
            if not n.startswith("_")
        }
    }
    for path, spec in api["classes"].items():
        names[path] = {
            n
            for n in list(spec["methods"])
            + list(spec["static"])
            + list(spec["properties"])
            + list(spec["attributes"])
            if not n.startswith("__")
        }
        names[path] |= {e.rpartition(".")[2] for e in api["enums"] if e.rpartition(".")[0] == path}
    for path, spec in api["enums"].items():
        names[path] = set(spec["members"])
        if spec["exported"]:  # .export_values(): members in the enclosing scope too
            names[path.rpartition(".")[0]] |= set(spec["members"])
    return names


# ============================================================================ fake CUDA
class FakeEvent:
    __slots__ = ("time_ms", "destroyed")

    def __init__(self):
        self.time_ms, self.destroyed = None, False


class FakeCuda:
    """Device memory as host byte arrays, streams as queues, CUDA graphs as recorded work.

    The device clock (``clock_ms``) advances by the wall time of the work the "device" runs,
    so CUDA events recorded around it measure that work and nothing the host does between.
    ``dtoh_log`` records every device→host copy as (source pointer, bytes).
    """

    def __init__(self):
        self.clock_ms = 0.0
        self.events_created = 0
        self.dtoh_log: list = []
        self.mem: dict[int, bytearray] = {}
        self.next = 1 << 20
        self.mallocs = 0
        self.frees = 0
        self.capturing = None
        self.graphs_captured = 0
        self.graph_launches = 0

    def malloc(self, nbytes):
        ptr = self.next
        self.next += -(-nbytes // 256) * 256 + 256
        self.mem[ptr] = bytearray(nbytes)
        self.mallocs += 1
        return ptr

    def free(self, ptr):
        del self.mem[ptr]
        self.frees += 1

    def stream_create(self):
        return 7

    def stream_destroy(self, stream):
        pass

    def synchronize(self, stream):
        if self.capturing is not None:
            raise RuntimeError("cudaStreamSynchronize during capture")

    def read(self, ptr, shape, dtype):
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        buf = self.mem[ptr]
        assert n <= len(buf), "read past the end of a device buffer"
        return np.frombuffer(bytes(buf[:n]), dtype=dtype).reshape(shape).copy()

    def write(self, ptr, array):
        buf = self.mem[ptr]
        b = np.ascontiguousarray(array).tobytes()
        assert len(b) <= len(buf), "write past the end of a device buffer"
        buf[: len(b)] = b

    def _execute(self, work):
        t0 = time.perf_counter()
        work()
        self.clock_ms += (time.perf_counter() - t0) * 1e3

    def enqueue(self, stream, work):
        if self.capturing is not None:
            self.capturing.append(work)
        else:
            self._execute(work)

    def event_create(self):
        self.events_created += 1
        return FakeEvent()

    def event_destroy(self, event):
        assert not event.destroyed, "cudaEventDestroy twice"
        event.destroyed = True

    def event_record(self, event, stream):
        assert isinstance(event, FakeEvent) and not event.destroyed
        if self.capturing is not None:
            raise RuntimeError("event recorded during stream capture (would not be timed)")
        event.time_ms = self.clock_ms

    def event_synchronize(self, event):
        assert event.time_ms is not None, "cudaEventSynchronize on an unrecorded event"

    def event_elapsed_ms(self, start, end):
        assert start.time_ms is not None and end.time_ms is not None, (
            "cudaErrorInvalidResourceHandle"
        )
        return end.time_ms - start.time_ms

    def mem_get_info(self):
        total = 8 << 30
        return total - sum(len(b) for b in self.mem.values()), total

    def htod(self, dst, src, stream):
        self.write(dst, src)

    def dtoh(self, dst, src, stream):
        self.dtoh_log.append((src, dst.nbytes))
        dst[...] = self.read(src, dst.shape, dst.dtype)

    def graph_capture_begin(self, stream):
        self.capturing = []

    def graph_capture_end(self, stream):
        work, self.capturing = self.capturing, None
        self.graphs_captured += 1
        return work

    def graph_launch(self, graph_exec, stream):
        self.graph_launches += 1
        for w in graph_exec:
            self._execute(w)

    def graph_destroy(self, graph_exec):
        pass


def install(monkeypatch, version: str = TRT10, gpu=None):
    """Put the double of release ``version`` in ``sys.modules['tensorrt']`` and fake the GPU
    identity + CUDA. Returns the generated module."""
    global DEVICE
    mod = module(version)
    CALLS.clear()
    UNSUPPORTED_OPS.clear()
    DEVICE = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    ident = dict(gpu or {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"})
    monkeypatch.setattr("toolkit.core.hardware.gpu_identity", lambda device=0: dict(ident))
    monkeypatch.setattr("toolkit.runtime.tensorrt.CudaRuntime", lambda: DEVICE)
    return mod
