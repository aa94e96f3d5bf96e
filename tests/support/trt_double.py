"""A strict test double of the TensorRT 10 Python API (``import tensorrt as trt``) and of the
CUDA runtime layer used by ``toolkit.runtime.tensorrt``.

Only names that exist in TensorRT 10's Python bindings are defined, with their real parameter
names (checked against the TensorRT 10 API reference): ``Builder(logger)``,
``Builder.create_network(flags=0)``, ``create_builder_config()``,
``create_optimization_profile()``, ``build_serialized_network(network, config)``,
``IBuilderConfig.set_memory_pool_limit(pool, pool_size)`` / ``set_flag(flag)`` /
``add_optimization_profile(profile)`` / ``create_timing_cache(serialized_timing_cache)`` /
``set_timing_cache(cache, ignore_mismatch)`` / ``get_timing_cache()``,
``IOptimizationProfile.set_shape(input, min, opt, max)``, ``OnnxParser(network, logger)`` with
``parse_from_file(model)``, ``num_errors``, ``get_error(index)`` → ``ParserError`` with
``code() desc() node() node_name() node_operator()``, ``ILayer.precision`` /
``set_output_type(index, dtype)``, ``Runtime(logger).deserialize_cuda_engine(serialized_engine)``,
``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_shape /
get_tensor_dtype / get_tensor_profile_shape / create_execution_context``,
``IExecutionContext.set_input_shape(name, shape) / get_tensor_shape(name) /
set_tensor_address(name, memory) / execute_async_v3(stream_handle)``.

Every class uses ``__slots__``: setting or reading a misspelled attribute raises
AttributeError; enum arguments are type-checked like pybind11 does, so a wrong call fails.

"Engines" are JSON plans that remember the ONNX file; executing one runs that ONNX graph with
onnxruntime on the CPU, reading and writing the fake device memory of ``FakeCuda`` — so the
session's binding, buffer and stream logic is exercised end to end with real numbers.
"""

from __future__ import annotations

import enum
import json
import types

import numpy as np

__version__ = "10.3.0"
CALLS: list = []                      # (what, details) recorded by the double
UNSUPPORTED_OPS: set = set()          # ops the fake parser reports as errors
DEVICE: "FakeCuda | None" = None      # the fake device memory engines execute against
ACTIVATION_BYTES = 3 << 20            # what every fake engine reports as device_memory_size_v2


def _enum(name, members):
    return enum.Enum(name, {m: i for i, m in enumerate(members)})


DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16",
                              "INT64", "INT4"])
BuilderFlag = _enum("BuilderFlag", [
    "FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32",
    "SPARSE_WEIGHTS", "SAFETY_SCOPE", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS",
    "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "FP8",
    "ERROR_ON_TIMING_CACHE_MISS", "DISABLE_COMPILATION_CACHE", "WEIGHTLESS", "STRIP_PLAN",
    "REFIT_IDENTICAL", "WEIGHT_STREAMING", "INT4"])
MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                          "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"])
NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag",
                                      ["EXPLICIT_BATCH", "STRONGLY_TYPED"])
TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
ErrorCode = _enum("ErrorCode", [
    "SUCCESS", "INTERNAL_ERROR", "MEM_ALLOC_FAILED", "MODEL_DESERIALIZE_FAILED", "INVALID_VALUE",
    "INVALID_GRAPH", "INVALID_NODE", "UNSUPPORTED_GRAPH", "UNSUPPORTED_NODE",
    "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_INPUT", "UNSUPPORTED_NODE_DATATYPE",
    "UNSUPPORTED_NODE_DYNAMIC", "UNSUPPORTED_NODE_SHAPE", "REFIT_FAILED"])
LayerType = _enum("LayerType", [
    "CONVOLUTION", "CAST", "GRID_SAMPLE", "NMS", "ACTIVATION", "POOLING", "LRN", "SCALE",
    "SOFTMAX", "DECONVOLUTION", "CONCATENATION", "ELEMENTWISE", "PLUGIN", "UNARY", "PADDING",
    "SHUFFLE", "REDUCE", "TOPK", "GATHER", "MATRIX_MULTIPLY", "RAGGED_SOFTMAX", "CONSTANT",
    "IDENTITY", "PLUGIN_V2", "SLICE", "SHAPE", "PARAMETRIC_RELU", "RESIZE", "TRIP_LIMIT",
    "RECURRENCE", "ITERATOR", "LOOP_OUTPUT", "SELECT", "ASSERTION", "FILL", "QUANTIZE",
    "DEQUANTIZE", "CONDITION", "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT", "SCATTER", "EINSUM",
    "ONE_HOT", "NON_ZERO", "REVERSE_SEQUENCE", "NORMALIZATION", "PLUGIN_V3"])
float32, float16, int8, int32, int64, bool, uint8, bfloat16 = (
    DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.INT64, DataType.BOOL,
    DataType.UINT8, DataType.BF16)

_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
       DataType.INT32: np.int32, DataType.INT64: np.int64, DataType.BOOL: np.bool_,
       DataType.UINT8: np.uint8}
_ONNX2TRT = {1: DataType.FLOAT, 10: DataType.HALF, 7: DataType.INT64, 6: DataType.INT32,
             9: DataType.BOOL, 3: DataType.INT8, 2: DataType.UINT8, 16: DataType.BF16}
_OP2LAYER = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "MatMul": "MATRIX_MULTIPLY",
             "Gemm": "MATRIX_MULTIPLY", "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE",
             "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE", "Relu": "ACTIVATION",
             "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION", "Where": "SELECT",
             "ReduceMean": "REDUCE", "ReduceSum": "REDUCE", "Sqrt": "UNARY", "Exp": "UNARY",
             "Erf": "UNARY", "Cast": "CAST", "Constant": "CONSTANT", "Shape": "SHAPE",
             "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Concat": "CONCATENATION",
             "Gather": "GATHER", "Slice": "SLICE", "QuantizeLinear": "QUANTIZE",
             "DequantizeLinear": "DEQUANTIZE", "Conv": "CONVOLUTION", "If": "CONDITION"}


def _check(value, cls, what):
    if not isinstance(value, cls):
        raise TypeError(f"{what}: incompatible function arguments (got {value!r}, expected {cls.__name__})")


def nptype(trt_type):
    _check(trt_type, DataType, "nptype()")
    return _NP[trt_type]


class ILogger:
    __slots__ = ()


class Logger(ILogger):
    __slots__ = ("min_severity",)

    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self, min_severity=None):
        self.min_severity = min_severity if min_severity is not None else Logger.Severity.WARNING


Logger.INTERNAL_ERROR, Logger.ERROR, Logger.WARNING, Logger.INFO, Logger.VERBOSE = list(Logger.Severity)


# ----------------------------------------------------------------------------- network
class ITensor:
    __slots__ = ("name", "shape", "dtype", "is_network_input", "is_network_output")

    def __init__(self, name, shape, dtype, is_input=False, is_output=False):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype
        self.is_network_input, self.is_network_output = is_input, is_output


class ILayer:
    __slots__ = ("name", "type", "_inputs", "_outputs", "_precision", "_out_types")

    def __init__(self, name, type, inputs, outputs):
        self.name, self.type, self._inputs, self._outputs = name, type, inputs, outputs
        self._precision, self._out_types = None, {}

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    @property
    def precision(self):
        return self._precision or DataType.FLOAT

    @precision.setter
    def precision(self, value):
        _check(value, DataType, "ILayer.precision")
        self._precision = value

    @property
    def precision_is_set(self):
        return self._precision is not None

    def set_output_type(self, index, dtype):
        _check(dtype, DataType, "ILayer.set_output_type()")
        if not 0 <= index < len(self._outputs):
            raise IndexError(index)
        self._out_types[index] = dtype

    def get_output_type(self, index):
        return self._out_types.get(index, self._outputs[index].dtype)

    def output_type_is_set(self, index):
        return index in self._out_types


class INetworkDefinition:
    __slots__ = ("_layers", "_inputs", "_outputs", "flags", "onnx_path")

    def __init__(self, flags):
        self._layers, self._inputs, self._outputs, self.flags, self.onnx_path = [], [], [], flags, None

    @property
    def num_layers(self):
        return len(self._layers)

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_layer(self, index):
        return self._layers[index]

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]


class ParserError:
    __slots__ = ("_code", "_desc", "_node", "_name", "_op")

    def __init__(self, code, desc, node, name, op):
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


class OnnxParser:
    __slots__ = ("_network", "_errors")

    def __init__(self, network, logger):
        _check(network, INetworkDefinition, "OnnxParser()")
        _check(logger, ILogger, "OnnxParser()")
        self._network, self._errors = network, []

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, index):
        return self._errors[index]

    def clear_errors(self):
        self._errors.clear()

    def parse(self, model, path=None):
        raise NotImplementedError("the toolkit uses parse_from_file (external data aware)")

    def parse_from_file(self, model):
        import onnx

        CALLS.append(("parse_from_file", model))
        m = onnx.shape_inference.infer_shapes(onnx.load(model))
        g = m.graph
        types_ = {}
        for v in list(g.value_info) + list(g.input) + list(g.output):
            t = v.type.tensor_type
            types_[v.name] = (_ONNX2TRT.get(t.elem_type, DataType.FLOAT),
                              tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim))
        tensors = {}

        def tensor(name):
            if name not in tensors:
                dt, shape = types_.get(name, (DataType.FLOAT, ()))
                tensors[name] = ITensor(name, shape, dt)
            return tensors[name]

        inits = {i.name for i in g.initializer}
        net = self._network
        net.onnx_path = model
        for v in g.input:
            if v.name not in inits:
                t = tensor(v.name)
                t.is_network_input = True
                net._inputs.append(t)
        for i, n in enumerate(g.node):
            if n.op_type in UNSUPPORTED_OPS:
                self._errors.append(ParserError(ErrorCode.UNSUPPORTED_NODE,
                                                f"No importer registered for op: {n.op_type}",
                                                i, n.name, n.op_type))
                continue
            ltype = getattr(LayerType, _OP2LAYER.get(n.op_type, "PLUGIN_V3"))
            ins = [tensor(x) for x in n.input if x and x not in inits]
            outs = [tensor(x) for x in n.output if x]
            net._layers.append(ILayer(n.name, ltype, ins, outs))
        for v in g.output:
            t = tensor(v.name)
            t.is_network_output = True
            net._outputs.append(t)
        return not self._errors


# ----------------------------------------------------------------------------- builder
class IHostMemory:
    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data = bytes(data)

    @property
    def nbytes(self):
        return len(self._data)

    def __bytes__(self):
        return self._data

    def __buffer__(self, flags):  # Python >= 3.12 buffer protocol
        return memoryview(self._data)


class ITimingCache:
    __slots__ = ("_data",)

    def __init__(self, data: bytes):
        self._data = bytes(data)

    def serialize(self):
        return IHostMemory(self._data)

    def combine(self, input_cache, ignore_mismatch):
        return True

    def reset(self):
        self._data = b""
        return True


class IOptimizationProfile:
    __slots__ = ("shapes",)

    def __init__(self):
        self.shapes = {}

    def set_shape(self, input, min, opt, max):
        _check(input, str, "IOptimizationProfile.set_shape()")
        if not (len(min) == len(opt) == len(max)):
            raise ValueError("min/opt/max ranks differ")
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, input):
        return list(self.shapes[input])


class IBuilderConfig:
    __slots__ = ("flags", "pools", "profiles", "_timing_cache", "int8_calibrator",
                 "builder_optimization_level")

    def __init__(self):
        self.flags, self.pools, self.profiles = set(), {}, []
        self._timing_cache = None
        self.int8_calibrator = None
        self.builder_optimization_level = 3

    def set_memory_pool_limit(self, pool, pool_size):
        _check(pool, MemoryPoolType, "set_memory_pool_limit()")
        self.pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self.pools.get(pool, 0)

    def set_flag(self, flag):
        _check(flag, BuilderFlag, "set_flag()")
        self.flags.add(flag)

    def get_flag(self, flag):
        _check(flag, BuilderFlag, "get_flag()")
        return flag in self.flags

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def add_optimization_profile(self, profile):
        _check(profile, IOptimizationProfile, "add_optimization_profile()")
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(serialized_timing_cache)
        CALLS.append(("create_timing_cache", data))
        return ITimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        _check(cache, ITimingCache, "set_timing_cache()")
        _check(ignore_mismatch, type(True), "set_timing_cache()")
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache


class Builder:
    __slots__ = ("logger",)

    def __init__(self, logger):
        _check(logger, ILogger, "Builder()")
        self.logger = logger

    def create_network(self, flags=0):
        _check(flags, int, "create_network()")
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        _check(network, INetworkDefinition, "build_serialized_network()")
        _check(config, IBuilderConfig, "build_serialized_network()")
        pinned = {l.name: {"precision": l._precision.name,
                           "outputs": {i: t.name for i, t in l._out_types.items()}}
                  for l in network._layers if l._precision is not None}
        profile = config.profiles[0].shapes if config.profiles else {}
        dynamic = [t.name for t in network._inputs if any(d < 0 for d in t.shape)]
        CALLS.append(("build_serialized_network", {
            "flags": sorted(f.name for f in config.flags),
            "pools": {p.name: v for p, v in config.pools.items()},
            "profiles": [p.shapes for p in config.profiles], "pinned": pinned,
            "int8_calibrator": config.int8_calibrator}))
        if any(n not in profile for n in dynamic):
            return None  # real TensorRT: "Network has dynamic or shape inputs, but no profile"
        if config._timing_cache is not None:
            config._timing_cache._data += b"tactics;"
        plan = {"onnx": network.onnx_path,
                "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
                "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs],
                "profile": {k: [list(s) for s in v] for k, v in profile.items()}}
        return IHostMemory(b"FAKEPLAN" + json.dumps(plan).encode())


# ----------------------------------------------------------------------------- runtime
class Runtime:
    __slots__ = ("logger",)

    def __init__(self, logger):
        _check(logger, ILogger, "Runtime()")
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        data = bytes(serialized_engine)
        if not data.startswith(b"FAKEPLAN"):
            return None
        return ICudaEngine(json.loads(data[8:]))


class ICudaEngine:
    __slots__ = ("_plan", "_io", "_sess")

    def __init__(self, plan):
        self._plan = plan
        self._io = [(n, s, DataType[d], TensorIOMode.INPUT) for n, s, d in plan["inputs"]] + \
                   [(n, s, DataType[d], TensorIOMode.OUTPUT) for n, s, d in plan["outputs"]]
        self._sess = None

    @property
    def num_io_tensors(self):
        return len(self._io)

    @property
    def num_optimization_profiles(self):
        return 1

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

    @property
    def device_memory_size(self):      # TensorRT 10.0 (deprecated in 10.1)
        return self.device_memory_size_v2

    @property
    def device_memory_size_v2(self):   # TensorRT >= 10.1: activation memory of a context
        return ACTIVATION_BYTES

    def get_tensor_profile_shape(self, name, profile_index):
        return [tuple(s) for s in self._plan["profile"][name]]

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    __slots__ = ("engine", "_shapes", "_addr", "_outs")

    def __init__(self, engine):
        self.engine, self._shapes, self._addr, self._outs = engine, {}, {}, None

    def set_input_shape(self, name, shape):
        _, eshape, _, mode = self.engine._find(name)
        if mode != TensorIOMode.INPUT or len(shape) != len(eshape):
            return False
        mn, _, mx = self.engine._plan["profile"].get(name, (eshape, eshape, eshape))
        if any(s < a or s > b for s, a, b in zip(shape, mn, mx)):
            return False
        self._shapes[name] = tuple(int(s) for s in shape)
        self._outs = None
        return True

    def _infer(self):
        if self._outs is None:
            feeds = {n: np.zeros(self._shapes[n], _NP[d]) for n, _, d, m in self.engine._io
                     if m == TensorIOMode.INPUT}
            self._outs = self._run(feeds)
        return self._outs

    def _run(self, feeds):
        import onnxruntime as ort

        e = self.engine
        if e._sess is None:
            e._sess = ort.InferenceSession(e._plan["onnx"], providers=["CPUExecutionProvider"])
        names = [n for n, _, _, m in e._io if m == TensorIOMode.OUTPUT]
        return dict(zip(names, e._sess.run(names, feeds)))

    def get_tensor_shape(self, name):
        _, eshape, _, mode = self.engine._find(name)
        if mode == TensorIOMode.INPUT:
            return self._shapes.get(name, tuple(eshape))
        return tuple(self._infer()[name].shape)

    def set_tensor_address(self, name, memory):
        self.engine._find(name)
        _check(memory, int, "set_tensor_address()")
        self._addr[name] = memory
        return True

    def execute_async_v3(self, stream_handle):
        _check(stream_handle, int, "execute_async_v3()")
        dev = DEVICE
        io = self.engine._io
        shapes, addr = dict(self._shapes), dict(self._addr)

        def work():
            feeds = {n: dev.read(addr[n], shapes[n], _NP[d]) for n, _, d, m in io
                     if m == TensorIOMode.INPUT}
            outs = self._run(feeds)
            for n, _, d, m in io:
                if m == TensorIOMode.OUTPUT:
                    dev.write(addr[n], outs[n].astype(_NP[d]))

        CALLS.append(("execute_async_v3", {n: addr.get(n) for n, *_ in io}))
        dev.enqueue(stream_handle, work)
        return True


# ----------------------------------------------------------------------------- fake CUDA
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
        buf[:len(b)] = b

    def _execute(self, work):
        import time

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
        assert start.time_ms is not None and end.time_ms is not None, "cudaErrorInvalidResourceHandle"
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


def install(monkeypatch, gpu=None):
    """Put this double in ``sys.modules['tensorrt']`` and fake the GPU identity + CUDA."""
    import sys

    global DEVICE
    mod = sys.modules[__name__]
    CALLS.clear()
    UNSUPPORTED_OPS.clear()
    DEVICE = FakeCuda()
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    ident = dict(gpu or {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"})
    monkeypatch.setattr("toolkit.core.hardware.gpu_identity", lambda device=0: dict(ident))
    monkeypatch.setattr("toolkit.runtime.tensorrt.CudaRuntime", lambda: DEVICE)
    return mod


def public_names():
    return sorted(n for n in globals() if not n.startswith("_") and n not in (
        "annotations", "enum", "json", "types", "np", "CALLS", "UNSUPPORTED_OPS", "DEVICE",
        "ACTIVATION_BYTES", "FakeCuda", "FakeEvent", "install", "public_names"))


types  # noqa: B018 - imported for callers building fake modules
