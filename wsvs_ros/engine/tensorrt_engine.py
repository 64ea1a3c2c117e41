"""TensorRT backend: build an engine from an exported ONNX model once per device, cache it, run it on CUDA tensors.

Written against the TensorRT 10 Python API; where TensorRT 8.6 (JetPack 6.0) differs, the line says so. TensorRT,
pycuda and ONNX Runtime are imported inside the functions that need them, so importing this module costs nothing and
a missing package is an error naming what to install, raised only when the backend is used.

The node never builds by surprise: `load_tensorrt_engine` uses a cached plan whose key (ONNX sha256, TensorRT
version, GPU, precision, shapes) matches this device, and otherwise raises `EngineNotBuiltError` carrying the
`wsvs build-engine ...` command that builds one. Each build is checked against ONNX Runtime and the figures are kept
in the plan's sidecar (`wsvs_ros.engine.engine_cache`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsvs_ros.engine.calibration import (
    CALIBRATORS,
    DEFAULT_CALIBRATION_FRAMES,
    CalibrationCache,
    CalibrationFeed,
    DeviceStaging,
    calibration_batches,
    calibration_cache_path,
    make_int8_calibrator,
)
from wsvs_ros.engine.engine_cache import (
    PRECISIONS,
    CacheLookup,
    EngineKey,
    EngineRecord,
    atomic_write_bytes,
    default_cache_dir,
    file_sha256,
    lookup,
    store,
    timing_cache_path,
)
from wsvs_ros.engine.onnx_export import INPUT_NAMES, OUTPUT_NAME, read_onnx_spec
from wsvs_ros.spec import ModelSpec

MIN_TENSORRT = (8, 6)
DEFAULT_WORKSPACE_MB = 1024  # TensorRT's default is all of the GPU's memory, which a Jetson shares with its CPU
# Least % of pixels whose argmax must match ONNX Runtime (fp32 on CPU); below it a build is kept but warned about.
AGREEMENT_THRESHOLDS = {"fp32": 99.5, "fp16": 99.0, "int8": 95.0}
CHECK_SAMPLES = 4
CALIBRATION_PLACEHOLDER = "FRAMES_DIR_OR_BAG"
IO_DTYPES = {"float32": torch.float32, "float16": torch.float16}

_LOG = logging.getLogger(__name__)
_INSTALL_TENSORRT = (
    "on a Jetson it comes with JetPack (sudo apt install python3-libnvinfer; a virtual environment needs "
    "--system-site-packages to see it); on an x86 workstation: pip install tensorrt "
    "(or pip install 'wsvs_ros[tensorrt]'). See docs/jetson.md"
)


class EngineNotBuiltError(RuntimeError):
    """No usable engine is cached for this model, precision and device.

    Attributes:
        command: the `wsvs build-engine ...` command that builds one (also in the message).
    """

    def __init__(self, message: str, *, command: str):
        super().__init__(message)
        self.command = command


class EngineLoadError(RuntimeError):
    """TensorRT could not deserialise a plan (another TensorRT version or GPU, or a corrupt file)."""


def tensorrt_version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "10.3.0" or "8.6.2.3"."""
    parts = version.split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def import_tensorrt() -> Any:
    """The `tensorrt` module, version 8.6 or newer.

    Raises:
        ImportError: not installed (the message says how to install it on a Jetson and on a workstation), or too old.
    """
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ImportError(f"the TensorRT backend needs the tensorrt Python package: {_INSTALL_TENSORRT}") from e
    if tensorrt_version_tuple(trt.__version__) < MIN_TENSORRT:
        raise ImportError(f"TensorRT {trt.__version__} is too old: wsvs_ros needs 8.6 or newer (JetPack 6)")
    return trt


def pycuda_context(index: int) -> tuple[Any, Any]:
    """(pycuda.driver, the primary CUDA context of device `index`), for when PyTorch has no CUDA.

    The primary context is the one TensorRT's runtime uses; callers push it around their pycuda calls, so it works
    from whichever thread an executor runs them on.
    Raises:
        ImportError: pycuda is not installed.
        ValueError: no such device.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise ImportError(
            "this PyTorch has no CUDA, so the TensorRT backend moves data with pycuda: pip install pycuda (it "
            "compiles against /usr/local/cuda, see docs/jetson.md), or install NVIDIA's CUDA PyTorch for JetPack"
        ) from e
    cuda.init()
    if index >= cuda.Device.count():
        raise ValueError(f"no CUDA device {index}: this machine has {cuda.Device.count()}")
    return cuda, cuda.Device(index).retain_primary_context()


_TRT_LOGGER: Any = None


def trt_logger(trt: Any) -> Any:
    """This process's one TensorRT logger (TensorRT expects builders and runtimes to share one).

    TensorRT's errors and warnings go to Python logging under "wsvs_ros.tensorrt" (its info messages at DEBUG), and
    the last errors are kept in `.errors` for exception messages.
    """
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        severity = trt.ILogger.Severity
        levels = {
            severity.INTERNAL_ERROR: logging.CRITICAL,
            severity.ERROR: logging.ERROR,
            severity.WARNING: logging.WARNING,
            severity.INFO: logging.DEBUG,
        }
        log = logging.getLogger("wsvs_ros.tensorrt")

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)  # pybind11 classes need their base initialised explicitly (TensorRT docs)
                self.errors: deque[str] = deque(maxlen=8)

            def log(self, sev: Any, msg: str) -> None:
                if sev == severity.VERBOSE:  # thousands of lines per build; not worth a Python logging call each
                    return
                level = levels.get(sev, logging.INFO)
                if level >= logging.ERROR:
                    self.errors.append(msg)
                log.log(level, "%s", msg)

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


def _recent_errors(logger: Any) -> str:
    errors = "; ".join(logger.errors)
    logger.errors.clear()
    return errors or "TensorRT logged no error (see the log above)"


def cuda_device(device: torch.device | str) -> torch.device:
    """`device` as an indexed CUDA device ("cuda" -> "cuda:0").

    Raises:
        ValueError: not a CUDA device.
    """
    d = torch.device(device)
    if d.type != "cuda":
        raise ValueError(f"TensorRT runs on a CUDA GPU: device must be 'cuda' or 'cuda:N', got {str(device)!r}")
    return torch.device("cuda", d.index if d.index is not None else 0)


@dataclass(frozen=True)
class BuildTarget:
    """The software and hardware a plan is built for (plans are valid only there)."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]


def detect_target(device: torch.device | str = "cuda") -> BuildTarget:
    """The installed TensorRT and the GPU `device` names.

    Raises:
        ImportError: no tensorrt (or, with CPU-only PyTorch, no pycuda).
        ValueError: not a CUDA device, or no such device.
    """
    trt = import_tensorrt()
    dev = cuda_device(device)
    index = dev.index or 0
    if torch.cuda.is_available():
        if index >= torch.cuda.device_count():
            raise ValueError(f"no CUDA device {index}: this machine has {torch.cuda.device_count()}")
        name, capability = torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)
    else:
        cuda, _ = pycuda_context(index)
        gpu = cuda.Device(index)
        name, capability = gpu.name(), gpu.compute_capability()
    return BuildTarget(str(trt.__version__), str(name), (int(capability[0]), int(capability[1])))


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The static shapes `export_onnx` gives the model's inputs ("rgb", "flow") and output ("logits")."""
    h, w = spec.input_height, spec.input_width
    return {"rgb": (1, 3, h, w), "flow": (1, 2 * spec.flow_length, h, w), OUTPUT_NAME: (1, spec.num_classes, h, w)}


def engine_key(spec: ModelSpec, precision: str, target: BuildTarget, *, onnx_sha256: str) -> EngineKey:
    """The cache key of an engine built from the ONNX file with hash `onnx_sha256` (whose metadata is `spec`)."""
    shapes = expected_shapes(spec)
    return EngineKey(
        onnx_sha256=onnx_sha256,
        tensorrt_version=target.tensorrt_version,
        gpu_name=target.gpu_name,
        compute_capability=target.compute_capability,
        precision=precision,
        input_shapes=tuple((name, shapes[name]) for name in INPUT_NAMES),
    )


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of an engine: name, direction, shape and element type ("float32", "float16", ...)."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: str


def check_engine_io(tensors: Sequence[TensorInfo], spec: ModelSpec) -> None:
    """Check that an engine's inputs and outputs are the ones the model's metadata describes.

    Raises:
        ValueError: other names, shapes or element types; the message says how to rebuild.
    """
    inputs = sorted(t.name for t in tensors if t.is_input)
    outputs = sorted(t.name for t in tensors if not t.is_input)
    if inputs != sorted(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise ValueError(
            f"the engine has inputs {inputs} and outputs {outputs}; wsvs_ros needs inputs {sorted(INPUT_NAMES)} and "
            f"output {[OUTPUT_NAME]}: build it from a model exported by `wsvs export` (wsvs build-engine MODEL.onnx)"
        )
    expected = expected_shapes(spec)
    for t in tensors:
        if t.shape != expected[t.name]:
            raise ValueError(
                f"engine tensor {t.name!r} has shape {t.shape}, but the model metadata ({spec.input_width}x"
                f"{spec.input_height}, flow_length={spec.flow_length}, {spec.num_classes} classes) needs "
                f"{expected[t.name]}: the plan was built from another model; rebuild it with "
                "`wsvs build-engine MODEL.onnx --force`"
            )
        if t.dtype not in IO_DTYPES:
            raise ValueError(f"engine tensor {t.name!r} is {t.dtype}; wsvs_ros feeds and reads {sorted(IO_DTYPES)}")


def _engine_io(trt: Any, engine: Any) -> list[TensorInfo]:
    # Name-based I/O (num_io_tensors, get_tensor_name, get_tensor_mode): TensorRT 8.5+; bindings are gone in 10.
    dtypes = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16", trt.DataType.INT32: "int32"}
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io.append(
            TensorInfo(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                shape=tuple(int(n) for n in engine.get_tensor_shape(name)),
                dtype=dtypes.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name))),
            )
        )
    return io


def _onnx_node_names(onnx_path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [node.name or f"{node.op_type}#{i}" for i, node in enumerate(graph.node)]


def parser_errors(parser: Any, onnx_path: Path) -> list[str]:
    """TensorRT ONNX parser errors, one line each, naming the ONNX node (and its operator on TensorRT 10)."""
    lines, node_names = [], None
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        # node_name()/node_operator(): TensorRT 10; 8.6 only gives the node's index, looked up in the ONNX graph.
        name = error.node_name() if hasattr(error, "node_name") else ""
        operator = error.node_operator() if hasattr(error, "node_operator") else ""
        if not name and error.node() >= 0:
            node_names = _onnx_node_names(onnx_path) if node_names is None else node_names
            name = node_names[error.node()] if error.node() < len(node_names) else f"#{error.node()}"
        where = f"node {name!r}" + (f" ({operator})" if operator else "") if name else "model"
        lines.append(f"  {where}: {error.desc()}")
    return lines


def _use_timing_cache(config: Any, path: Path, log: logging.Logger) -> None:
    data = path.read_bytes() if path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except (RuntimeError, TypeError, ValueError):
        cache = None
    if cache is None and data:
        log.warning("TensorRT timing cache %s is unreadable; starting a new one", path)
        cache = config.create_timing_cache(b"")
    # The file is per TensorRT version and GPU (timing_cache_path), so a mismatch can only be a damaged file.
    config.set_timing_cache(cache, False)  # ignore_mismatch=False


def _progress_monitor(trt: Any, log: logging.Logger) -> Any:
    """Logs the build's top-level phases and their durations; None on TensorRT 8.6 (IProgressMonitor is 10.0+)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._top: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                self._top[phase_name] = time.monotonic()
                log.info("TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if phase_name in self._top:
                log.info("TensorRT build: %s done in %.0f s", phase_name, time.monotonic() - self._top.pop(phase_name))

    return _Monitor()


def build_engine(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    calibrator: Any = None,
    timing_cache: str | os.PathLike[str] | None = None,
    logger: logging.Logger | None = None,
) -> bytes:
    """Build a serialized TensorRT engine (a plan) from an ONNX file written by `export_onnx`.

    One optimisation profile at the model's static input shapes; fp16 and int8 enable the FP16 flag (int8 layers
    without an int8 kernel then fall back to fp16, not fp32).

    Args:
        onnx_path: the exported model (its metadata gives the expected input shapes).
        precision: "fp32", "fp16" or "int8".
        workspace_mb: TensorRT's workspace memory pool limit in MiB (scratch memory of a layer's tactics).
        calibrator: an INT8 calibrator (`make_int8_calibrator`); required for int8.
        timing_cache: a file of measured tactic timings, read before and written after the build, so rebuilds of
            this or similar models on the same TensorRT + GPU skip most of the timing (None: no file).
        logger: where progress goes (default: this module's logger).
    Returns:
        The plan's bytes.
    Raises:
        ImportError: no tensorrt.
        ValueError: a bad argument, an ONNX model TensorRT cannot parse (the nodes are named), or inputs other than
            the model's metadata describes.
        RuntimeError: the build failed (TensorRT's errors are in the message), or TensorRT 11 with fp16/int8.
    """
    log = logger or _LOG
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calibrator is None:
        raise ValueError(
            "an int8 build needs a calibrator; `wsvs build-engine --int8 --calib FRAMES_DIR_OR_BAG` makes one"
        )
    if workspace_mb < 1:
        raise ValueError(f"workspace_mb must be a positive number of MiB, got {workspace_mb}")
    trt = import_tensorrt()
    major = tensorrt_version_tuple(trt.__version__)[0]
    if major >= 11 and precision != "fp32":
        raise RuntimeError(
            f"TensorRT {trt.__version__} removed the fp16/int8 builder flags (strongly typed networks only); build "
            "with TensorRT 10 (JetPack 6.1/6.2) or 8.6 (JetPack 6.0), or build fp32"
        )
    onnx_path = Path(onnx_path)
    spec = read_onnx_spec(onnx_path)
    trt_log = trt_logger(trt)
    builder = trt.Builder(trt_log)
    # 8.x needs EXPLICIT_BATCH for ONNX models; 10.x always uses explicit batch and ignores the deprecated flag.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_log)
    if not parser.parse_from_file(str(onnx_path)):
        raise ValueError(
            f"TensorRT's ONNX parser rejected {onnx_path}:\n" + "\n".join(parser_errors(parser, onnx_path))
        )
    found = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    expected = expected_shapes(spec)
    wanted = {name: expected[name] for name in INPUT_NAMES}
    if found != wanted:
        raise ValueError(
            f"{onnx_path} has inputs {found}, its metadata needs {wanted}: re-export it with `wsvs export`"
        )

    config = builder.create_builder_config()
    # set_memory_pool_limit: TensorRT 8.4+; 8.x's `max_workspace_size` is deprecated there and removed in 10.
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if major < 10:
        # 8.6 enables cuBLAS/cuDNN tactics by default and then loads those libraries at run time, memory a Jetson
        # shares with its CPU; 10.x disables both sources by default.
        sources = config.get_tactic_sources()
        for name in ("CUBLAS", "CUBLAS_LT", "CUDNN"):
            sources &= ~(1 << int(getattr(trt.TacticSource, name)))
        config.set_tactic_sources(sources)
    profile = builder.create_optimization_profile()
    for name, shape in wanted.items():
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast fp16: the %s engine may be no faster than fp32", precision)
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        # Implicit (calibrated) quantization: deprecated since TensorRT 10.1 in favour of explicit Q/DQ nodes, still
        # supported throughout 10.x; removed in 11 (refused above).
        config.int8_calibrator = calibrator
    if timing_cache is not None:
        _use_timing_cache(config, Path(timing_cache), log)
    monitor = _progress_monitor(trt, log)
    if monitor is not None:
        config.progress_monitor = monitor

    plan = builder.build_serialized_network(network, config)  # 8.0+; returns None on failure
    if plan is None:
        raise RuntimeError(
            f"TensorRT could not build a {precision} engine from {onnx_path}: {_recent_errors(trt_log)}. "
            "If it ran out of memory, lower --workspace or stop other GPU programs (on a Jetson the GPU shares RAM)"
        )
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


class TensorRTEngine:
    """A TensorRT plan behind the `Engine` protocol: `infer(rgb, flow) -> logits`.

    Buffers are allocated once: the output at load, an input's staging buffer on first need. Inputs that are
    contiguous tensors of the engine's dtype on its device (what `Segmenter` passes) are bound directly, others
    copied device-to-device into the staging buffer; the network runs with `execute_async_v3` on PyTorch's current
    stream, so nothing waits for the host. Not thread-safe: one `infer` at a time.

    When PyTorch has no CUDA, inputs and outputs are CPU tensors (`device` is cpu) and pycuda copies them through
    pinned buffers; install NVIDIA's CUDA PyTorch to avoid those copies.

    Args:
        plan: a plan file or its bytes.
        spec: the model's metadata; the engine's inputs and outputs must match it.
        device: the CUDA device to run on ("cuda", "cuda:1").
    Raises:
        ImportError: no tensorrt (or, with CPU-only PyTorch, no pycuda).
        EngineLoadError: TensorRT could not deserialise the plan.
        RuntimeError: no execution context (GPU memory for the activations) could be created.
        ValueError: the engine's inputs and outputs do not match `spec`.
    """

    def __init__(self, plan: str | os.PathLike[str] | bytes, *, spec: ModelSpec, device: torch.device | str = "cuda"):
        trt = import_tensorrt()
        gpu = cuda_device(device)
        data = bytes(plan) if isinstance(plan, (bytes, bytearray, memoryview)) else Path(plan).read_bytes()
        self.spec = spec
        self._trt_log = trt_logger(trt)
        self._pycuda = None if torch.cuda.is_available() else pycuda_context(gpu.index or 0)
        self.device = gpu if self._pycuda is None else torch.device("cpu")
        self._gpu = gpu
        with self._current():
            self._runtime = trt.Runtime(self._trt_log)  # must outlive the engine
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                raise EngineLoadError(
                    f"TensorRT {trt.__version__} could not load the plan ({_recent_errors(self._trt_log)}); it was "
                    "built by another TensorRT version or on another GPU, or the file is damaged: rebuild it with "
                    "`wsvs build-engine MODEL.onnx --force`"
                )
            self.io = _engine_io(trt, self._engine)
            check_engine_io(self.io, spec)
            # device_memory_size_v2: TensorRT 10.1+; device_memory_size (8.6, 10.x) is gone in 11.
            memory = getattr(self._engine, "device_memory_size_v2", None)
            self.device_memory_bytes = int(self._engine.device_memory_size if memory is None else memory)
            self._context = self._engine.create_execution_context()
            if self._context is None:  # not the plan's fault: a rebuild would not help
                raise RuntimeError(
                    f"TensorRT could not create an execution context ({self.device_memory_bytes >> 20} MiB of GPU "
                    f"memory for activations): {_recent_errors(self._trt_log)}; free GPU memory and retry"
                )
            self._dtypes = {t.name: IO_DTYPES[t.dtype] for t in self.io}
            self._shapes = {t.name: t.shape for t in self.io}
            if self._pycuda is None:
                self._output = torch.empty(self._shapes[OUTPUT_NAME], dtype=self._dtypes[OUTPUT_NAME], device=gpu)
                self._context.set_tensor_address(OUTPUT_NAME, self._output.data_ptr())
                self._staging: dict[str, torch.Tensor] = {}
            else:
                self._host_io = _PinnedIO(self._pycuda[0], self._context, self._shapes, self._dtypes)

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        """Make this engine's GPU current: PyTorch's device guard, or pycuda's primary context."""
        if self._pycuda is None:
            with torch.cuda.device(self._gpu):
                yield
        else:
            self._pycuda[1].push()
            try:
                yield
            finally:
                self._pycuda[1].pop()

    def infer(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) normalised RGB and (1, 2L, H, W) encoded flow on `device` -> (1, C, H, W) float32 logits.

        Raises:
            ValueError: an input's shape is not the engine's.
            RuntimeError: TensorRT failed to enqueue the network.
        """
        inputs = {"rgb": rgb, "flow": flow}
        for name, x in inputs.items():
            if tuple(x.shape) != self._shapes[name]:
                raise ValueError(f"{name} must be {self._shapes[name]} for this engine, got {tuple(x.shape)}")
        with self._current():
            if self._pycuda is not None:
                return self._host_io.run(self._context, inputs, self._trt_log)
            for name, x in inputs.items():
                if x.device == self._gpu and x.dtype == self._dtypes[name] and x.is_contiguous():
                    address = x.data_ptr()  # bound as it is: no copy
                else:
                    if name not in self._staging:
                        self._staging[name] = torch.empty(
                            self._shapes[name], dtype=self._dtypes[name], device=self._gpu
                        )
                    address = self._staging[name].copy_(x).data_ptr()
                self._context.set_tensor_address(name, address)
            # execute_async_v3 and set_tensor_address: TensorRT 8.5+ (execute_async_v2 and bindings are gone in 10).
            if not self._context.execute_async_v3(torch.cuda.current_stream(self._gpu).cuda_stream):
                raise RuntimeError(f"TensorRT failed to run the engine: {_recent_errors(self._trt_log)}")
            return self._output.float() if self._output.dtype != torch.float32 else self._output.clone()


class _PinnedIO:
    """Pinned host buffers + pycuda device buffers for an engine run from CPU tensors (PyTorch without CUDA)."""

    def __init__(self, cuda: Any, context: Any, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, Any]):
        self._cuda = cuda
        self._stream = cuda.Stream()
        np_dtypes = {torch.float32: np.float32, torch.float16: np.float16}
        self._host = {n: cuda.pagelocked_empty(shape, np_dtypes[dtypes[n]]) for n, shape in shapes.items()}
        self._device = {n: cuda.mem_alloc(h.nbytes) for n, h in self._host.items()}
        for name, buffer in self._device.items():
            context.set_tensor_address(name, int(buffer))

    def run(self, context: Any, inputs: Mapping[str, torch.Tensor], trt_log: Any) -> torch.Tensor:
        cuda, stream = self._cuda, self._stream
        for name, x in inputs.items():
            np.copyto(self._host[name], x.detach().cpu().numpy(), casting="same_kind")
            cuda.memcpy_htod_async(self._device[name], self._host[name], stream)
        if not context.execute_async_v3(stream.handle):
            raise RuntimeError(f"TensorRT failed to run the engine: {_recent_errors(trt_log)}")
        cuda.memcpy_dtoh_async(self._host[OUTPUT_NAME], self._device[OUTPUT_NAME], stream)
        stream.synchronize()
        return torch.from_numpy(self._host[OUTPUT_NAME].astype(np.float32, copy=True))


@dataclass(frozen=True)
class AccuracyCheck:
    """How closely an engine's logits follow a reference runtime's on the same inputs.

    Attributes:
        reference: the reference runtime.
        inputs: what the inputs were (recorded frames or seeded random tensors).
        samples: how many inputs.
        max_abs_diff: the largest |logit difference| over all samples, classes and pixels.
        label_agreement: % of pixels whose argmax class equals the reference's.
        threshold: the least agreement this precision should reach (`AGREEMENT_THRESHOLDS`).
    """

    reference: str
    inputs: str
    samples: int
    max_abs_diff: float
    label_agreement: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.label_agreement >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccuracyCheck:
        return cls(
            **{k: d[k] for k in ("reference", "inputs", "samples", "max_abs_diff", "label_agreement", "threshold")}
        )

    def summary(self) -> str:
        verdict = "ok" if self.passed else "BELOW THRESHOLD"
        return (
            f"label agreement {self.label_agreement:.2f} % (threshold {self.threshold:.1f} %: {verdict}), "
            f"max |logit difference| {self.max_abs_diff:.4g}, vs {self.reference} on {self.samples} {self.inputs}"
        )


def compare_logits(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(max |got - expected|, % of pixels with the same argmax class) over (got, expected) (B, C, H, W) logit pairs.

    Raises:
        ValueError: no pairs, or a pair whose shapes differ.
    """
    max_diff, same, total = 0.0, 0, 0
    for got, expected in pairs:
        if got.shape != expected.shape:
            raise ValueError(f"logits of shape {tuple(got.shape)} cannot be compared with {tuple(expected.shape)}")
        got, expected = got.detach().float().cpu(), expected.detach().float().cpu()
        max_diff = max(max_diff, (got - expected).abs().max().item())
        same += int((got.argmax(dim=1) == expected.argmax(dim=1)).sum().item())
        total += got[:, 0].numel()
    if total == 0:
        raise ValueError("no logits to compare")
    return max_diff, 100.0 * same / total


def reference_inputs(
    spec: ModelSpec,
    *,
    samples: int = CHECK_SAMPLES,
    source: str | os.PathLike[str] | None = None,
    topic: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """Inputs for the accuracy check, as CPU tensors, and a description of them.

    Recorded frames when `source` is given (prepared like calibration data, flows computed on `device`), otherwise
    seeded random normal RGB and flow clipped like `encode_flow` clips it.
    """
    if source is not None:
        batches = calibration_batches(source, spec, max_batches=samples, device=device, topic=topic)
        pairs = [(b["rgb"].cpu(), b["flow"].cpu()) for b in batches]
        return pairs, f"frames of {Path(source).name}"
    generator = torch.Generator().manual_seed(0)
    h, w, length = spec.input_height, spec.input_width, spec.flow_length
    pairs = [
        (
            torch.randn(1, 3, h, w, generator=generator),
            torch.randn(1, 2 * length, h, w, generator=generator).clamp(-spec.flow_clip, spec.flow_clip),
        )
        for _ in range(samples)
    ]
    return pairs, "random normal inputs (seed 0)"


def verify_engine(
    engine: TensorRTEngine,
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    inputs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    inputs_description: str,
) -> AccuracyCheck:
    """Compare `engine` with ONNX Runtime (CPU, fp32) on `inputs`; running the engine twice per input.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    from wsvs_ros.engine.onnxruntime_engine import OnnxRuntimeEngine

    reference = OnnxRuntimeEngine(onnx_path)
    pairs = [
        (engine.infer(rgb.to(engine.device), flow.to(engine.device)), reference.infer(rgb, flow))
        for rgb, flow in inputs
    ]
    max_diff, agreement = compare_logits(pairs)
    return AccuracyCheck(
        reference="onnxruntime (CPU, fp32)",
        inputs=inputs_description,
        samples=len(pairs),
        max_abs_diff=max_diff,
        label_agreement=agreement,
        threshold=AGREEMENT_THRESHOLDS[precision],
    )


def build_engine_command(
    onnx_path: str | os.PathLike[str], *, precision: str, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """The shell command that builds the engine `load_tensorrt_engine` looked for.

    For int8 it holds the placeholder `FRAMES_DIR_OR_BAG`, to be replaced with recorded camera frames.
    """
    args = ["wsvs", "build-engine", str(Path(onnx_path).resolve())]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--int8", "--calib", CALIBRATION_PLACEHOLDER]
    if cache_dir is not None:
        args += ["--cache-dir", str(Path(cache_dir).resolve())]
    return shlex.join(args)


def find_engine(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    device: torch.device | str = "cuda",
    cache_dir: str | os.PathLike[str] | None = None,
) -> CacheLookup:
    """Look up the cached engine for a model, precision and this device's TensorRT + GPU (see `engine_cache.lookup`).

    Raises:
        ImportError: no tensorrt.
        FileNotFoundError, ValueError: no such ONNX file, or one without wsvs_ros metadata.
    """
    target = detect_target(device)
    spec = read_onnx_spec(onnx_path)
    key = engine_key(spec, precision, target, onnx_sha256=file_sha256(onnx_path))
    return lookup(key, default_cache_dir() if cache_dir is None else Path(cache_dir))


def build_and_cache(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    device: torch.device | str = "cuda",
    cache_dir: str | os.PathLike[str] | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    calib_source: str | os.PathLike[str] | None = None,
    calib_topic: str | None = None,
    calibrator: str = "entropy",
    calib_frames: int = DEFAULT_CALIBRATION_FRAMES,
    reason: str | None = None,
    logger: logging.Logger | None = None,
) -> tuple[TensorRTEngine, CacheLookup]:
    """Build an engine, check it against ONNX Runtime, and store plan + sidecar in the cache.

    The check uses `CHECK_SAMPLES` recorded frames from `calib_source` when given, seeded random inputs otherwise.
    A build whose label agreement is under `AGREEMENT_THRESHOLDS[precision]` is kept and logged as a warning with
    the figures. Without onnxruntime the check is skipped and the sidecar says so.

    Args:
        onnx_path, precision, device, workspace_mb: as for `build_engine` / `TensorRTEngine`.
        cache_dir: the engine cache (default `default_cache_dir()`).
        calib_source, calib_topic: recorded frames (folder or bag, and the bag's camera topic); required for int8.
        calibrator: "entropy" or "minmax" (int8 only).
        calib_frames: how many frames to calibrate on, spread over the recording.
        reason: why this build happens, for the one log line that announces it.
    Returns:
        (the loaded engine, its cache slot).
    Raises:
        as `build_engine`; ValueError for int8 without `calib_source` or an unknown calibrator.
    """
    log = logger or _LOG
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and calib_source is None:
        raise ValueError(
            f"int8 needs calibration frames: --calib {CALIBRATION_PLACEHOLDER} (a folder of images or a bag)"
        )
    if calibrator not in CALIBRATORS:
        raise ValueError(f"calibrator must be one of {CALIBRATORS}, got {calibrator!r}")
    onnx_path = Path(onnx_path).resolve()
    spec = read_onnx_spec(onnx_path)
    target = detect_target(device)
    onnx_sha256 = file_sha256(onnx_path)
    key = engine_key(spec, precision, target, onnx_sha256=onnx_sha256)
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    data_device = cuda_device(device) if torch.cuda.is_available() else torch.device("cpu")
    log.warning(
        "building the TensorRT %s engine for %s on %s with TensorRT %s%s; this takes minutes on a Jetson, once: the "
        "engine is cached in %s",
        precision, onnx_path.name, target.gpu_name, target.tensorrt_version, f" ({reason})" if reason else "", root,
    )  # fmt: skip

    feed, calibration_info, trt_calibrator = None, None, None
    if precision == "int8":
        assert calib_source is not None
        table = CalibrationCache(
            calibration_cache_path(
                root, onnx_sha256=onnx_sha256, source=calib_source, topic=calib_topic, algorithm=calibrator,
                max_batches=calib_frames,
            )
        )  # fmt: skip
        batches = calibration_batches(
            calib_source, spec, max_batches=calib_frames, device=data_device, topic=calib_topic
        )
        feed = CalibrationFeed(batches, staging=DeviceStaging(cuda_device(device)))
        trt_calibrator = make_int8_calibrator(calibrator, feed, table)
        calibration_info = {
            "source": str(Path(calib_source).resolve()), "topic": calib_topic, "calibrator": calibrator,
            "frames": calib_frames, "table": str(table.path), "table_reused": table.read() is not None,
        }  # fmt: skip
        if calibration_info["table_reused"]:
            log.info("reusing the INT8 calibration table %s", table.path)

    start = time.monotonic()
    try:
        plan = build_engine(
            onnx_path, precision=precision, workspace_mb=workspace_mb, calibrator=trt_calibrator,
            timing_cache=timing_cache_path(
                root, tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
                compute_capability=target.compute_capability,
            ),
            logger=log,
        )  # fmt: skip
    finally:
        if feed is not None and feed.error is not None:
            raise RuntimeError(f"INT8 calibration failed after {feed.served} frames: {feed.error}") from feed.error
    build_seconds = time.monotonic() - start
    if feed is not None and calibration_info is not None:
        calibration_info["frames_fed"] = feed.served

    engine = TensorRTEngine(plan, spec=spec, device=device)
    try:
        inputs, description = reference_inputs(spec, source=calib_source, topic=calib_topic, device=data_device)
        check = verify_engine(engine, onnx_path, precision=precision, inputs=inputs, inputs_description=description)
        check_record = check.to_dict()
        if not check.passed:
            log.warning(
                "the %s engine is kept, but its labels agree with ONNX Runtime on only %.2f %% of pixels (threshold "
                "%.1f %%; max |logit difference| %.3g, %d %s)%s",
                precision, check.label_agreement, check.threshold, check.max_abs_diff, check.samples, check.inputs,
                "; for int8 try --calibrator minmax, more or other --calib frames, or --fp16" if precision == "int8"
                else "",
            )  # fmt: skip
    except ImportError as e:
        check_record = {"skipped": str(e)}
        log.warning("accuracy check skipped: %s", e)
    info = {
        "onnx_path": str(onnx_path),
        "workspace_mb": workspace_mb,
        "device_memory_bytes": engine.device_memory_bytes,
        "calibration": calibration_info,
    }
    cached = store(key, plan, root, build_seconds=build_seconds, check=check_record, info=info)
    log.info("TensorRT %s engine built in %.0f s: %s", precision, build_seconds, cached.plan_path)
    return engine, cached


def load_tensorrt_engine(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str,
    device: torch.device | str = "cuda",
    cache_dir: str | os.PathLike[str] | None = None,
    build_if_missing: bool = False,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    logger: logging.Logger | None = None,
) -> TensorRTEngine:
    """The cached engine of an exported model for this device, built first only when asked.

    Args:
        onnx_path: the model exported by `wsvs export`.
        precision: "fp32", "fp16" or "int8".
        device: the CUDA device.
        cache_dir: the engine cache (default `default_cache_dir()`).
        build_if_missing: build (minutes on a Jetson) when no valid engine is cached; int8 is never built here
            because it needs calibration frames.
        workspace_mb: the build's workspace limit.
        logger: where the one line explaining a rebuild goes.
    Raises:
        EngineNotBuiltError: no valid engine is cached and `build_if_missing` is False (or precision is int8); the
            message says why and holds the `wsvs build-engine ...` command, also in `.command`.
        ImportError: no tensorrt (the message says how to install it).
        FileNotFoundError, ValueError: no such ONNX file, one without wsvs_ros metadata, or a bad argument.
    """
    log = logger or _LOG
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    target = detect_target(device)
    onnx_path = Path(onnx_path)
    spec = read_onnx_spec(onnx_path)
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    found = lookup(engine_key(spec, precision, target, onnx_sha256=file_sha256(onnx_path)), root)
    reason = found.reason
    if found.hit:
        try:
            engine = TensorRTEngine(found.plan_path, spec=spec, device=device)
        except EngineLoadError as e:
            reason = str(e)
        else:
            log.info(
                "TensorRT %s engine %s: %d MiB activation memory",
                precision,
                found.plan_path,
                engine.device_memory_bytes >> 20,
            )
            return engine
    command = build_engine_command(onnx_path, precision=precision, cache_dir=cache_dir)
    if not build_if_missing or precision == "int8":
        placeholder = f" (with {CALIBRATION_PLACEHOLDER} your recorded camera frames)" if precision == "int8" else ""
        raise EngineNotBuiltError(
            f"no usable TensorRT {precision} engine for {onnx_path.name} in {root}: {reason}. Build it once on this "
            f"device, it takes minutes: {command}{placeholder}",
            command=command,
        )
    engine, _ = build_and_cache(
        onnx_path, precision=precision, device=device, cache_dir=root, workspace_mb=workspace_mb, reason=reason,
        logger=log,
    )  # fmt: skip
    return engine


def format_record(plan_path: Path, record: EngineRecord) -> str:
    """Two lines for people: where the plan is and what it was built for, then its accuracy check."""
    key = record.key
    head = (
        f"{plan_path} ({record.plan_size / 2**20:.1f} MiB, {key.precision}, TensorRT {key.tensorrt_version}, "
        f"{key.gpu_name} compute {'.'.join(map(str, key.compute_capability))}, built {record.built_at} in "
        f"{record.build_seconds:.0f} s)"
    )
    if "skipped" in record.check:
        return f"{head}\ncheck: skipped: {record.check['skipped']}"
    if not record.check:
        return f"{head}\ncheck: none recorded"
    return f"{head}\ncheck: {AccuracyCheck.from_dict(record.check).summary()}"
