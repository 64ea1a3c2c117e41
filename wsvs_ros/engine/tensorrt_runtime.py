"""TensorRT runtime: importing TensorRT, its one logger, the GPU a plan is for, and `TensorRTEngine`, which runs a
deserialised plan on CUDA tensors.

Written against the TensorRT 10 Python API; where TensorRT 8.6 (JetPack 6.0) differs, the line says so. TensorRT and
pycuda are imported inside the functions that need them, so importing this module costs nothing and a missing package
is an error naming what to install, raised only when the backend is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsvs_ros.engine.onnx_export import INPUT_NAMES, OUTPUT_NAME
from wsvs_ros.spec import ModelSpec

MIN_TENSORRT = (8, 6)


IO_DTYPES = {"float32": torch.float32, "float16": torch.float16}


_INSTALL_TENSORRT = (
    "on a Jetson it comes with JetPack (sudo apt install python3-libnvinfer; a virtual environment needs "
    "--system-site-packages to see it); on an x86 workstation: pip install tensorrt "
    "(or pip install 'wsvs_ros[tensorrt]'). See docs/jetson.md"
)


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


def recent_errors(logger: Any) -> str:
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
                    f"TensorRT {trt.__version__} could not load the plan ({recent_errors(self._trt_log)}); it was "
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
                    f"memory for activations): {recent_errors(self._trt_log)}; free GPU memory and retry"
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
                raise RuntimeError(f"TensorRT failed to run the engine: {recent_errors(self._trt_log)}")
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
            raise RuntimeError(f"TensorRT failed to run the engine: {recent_errors(trt_log)}")
        cuda.memcpy_dtoh_async(self._host[OUTPUT_NAME], self._device[OUTPUT_NAME], stream)
        stream.synchronize()
        return torch.from_numpy(self._host[OUTPUT_NAME].astype(np.float32, copy=True))
