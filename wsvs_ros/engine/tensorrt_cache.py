"""TensorRT engines built once per device and cached: find, build-and-store, and load the plan that fits.

The node never builds by surprise: `load_tensorrt_engine` uses a cached plan whose key (ONNX sha256, TensorRT
version, GPU, precision, shapes) matches this device, and otherwise raises `EngineNotBuiltError` carrying the
`wsvs build-engine ...` command that builds one. Each build is checked against ONNX Runtime and the figures are kept
in the plan's sidecar (the cache's keys, records and slots are `wsvs_ros.engine.engine_cache`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

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
    default_cache_dir,
    file_sha256,
    lookup,
    store,
    timing_cache_path,
)
from wsvs_ros.engine.onnx_export import INPUT_NAMES, read_onnx_spec
from wsvs_ros.engine.tensorrt_build import (
    CALIBRATION_PLACEHOLDER,
    DEFAULT_WORKSPACE_MB,
    AccuracyCheck,
    build_engine,
    build_engine_command,
    reference_inputs,
    verify_engine,
)
from wsvs_ros.engine.tensorrt_runtime import (
    BuildTarget,
    EngineLoadError,
    TensorRTEngine,
    cuda_device,
    detect_target,
    expected_shapes,
)
from wsvs_ros.spec import ModelSpec

_LOG = logging.getLogger(__name__)


class EngineNotBuiltError(RuntimeError):
    """No usable engine is cached for this model, precision and device.

    Attributes:
        command: the `wsvs build-engine ...` command that builds one (also in the message).
    """

    def __init__(self, message: str, *, command: str):
        super().__init__(message)
        self.command = command


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
