"""TensorRT build: an engine from an exported ONNX model (fp32, fp16 or INT8 with calibration), checked against ONNX
Runtime before it is kept.

Written against the TensorRT 10 Python API; where TensorRT 8.6 (JetPack 6.0) differs, the line says so.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from wsvs_ros.engine.calibration import (
    calibration_batches,
)
from wsvs_ros.engine.engine_cache import (
    PRECISIONS,
    atomic_write_bytes,
)
from wsvs_ros.engine.onnx_export import INPUT_NAMES, read_onnx_spec
from wsvs_ros.engine.tensorrt_runtime import (
    TensorRTEngine,
    expected_shapes,
    import_tensorrt,
    recent_errors,
    tensorrt_version_tuple,
    trt_logger,
)
from wsvs_ros.spec import ModelSpec

DEFAULT_WORKSPACE_MB = 1024  # TensorRT's default is all of the GPU's memory, which a Jetson shares with its CPU


# Least % of pixels whose argmax must match ONNX Runtime (fp32 on CPU); below it a build is kept but warned about.
AGREEMENT_THRESHOLDS = {"fp32": 99.5, "fp16": 99.0, "int8": 95.0}


CHECK_SAMPLES = 4


CALIBRATION_PLACEHOLDER = "FRAMES_DIR_OR_BAG"


_LOG = logging.getLogger(__name__)


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
            f"TensorRT could not build a {precision} engine from {onnx_path}: {recent_errors(trt_log)}. "
            "If it ran out of memory, lower --workspace or stop other GPU programs (on a Jetson the GPU shares RAM)"
        )
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


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
