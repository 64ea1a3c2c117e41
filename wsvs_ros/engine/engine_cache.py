"""The on-disk cache of TensorRT engines: what each plan was built for, and whether it can be used here.

A TensorRT plan runs only with the TensorRT version and on the GPU it was built with, and building one takes minutes
on a Jetson. So each plan is stored once per (model, precision) with a JSON sidecar holding its `EngineKey`, and
`lookup` decides, with no TensorRT involved, whether the plan can be loaded or must be (re)built, and why:

    <cache_dir>/<precision>-<model hash>.plan    the serialized engine
    <cache_dir>/<precision>-<model hash>.json    EngineKey, plan size + sha256, build time and duration, accuracy check
    <cache_dir>/timing-<target hash>.cache       TensorRT's timing cache for one TensorRT version + GPU
    <cache_dir>/calibration/                     INT8 calibration caches (`wsvs_ros.engine.calibration`)

The file name leaves the TensorRT version and the GPU out on purpose: after a JetPack upgrade the new build replaces
the stale plan instead of leaving another 100 MB on the device, and the sidecar says what changed. Plan and sidecar
are written atomically (temporary file + rename), the sidecar last, so a crash mid-write reads as a plan to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wsvs_ros.atomic_file import atomic_write

PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = 1  # bumped when the sidecar's fields change meaning; other versions read as "rebuild"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/wsvs_ros/engines`, or `~/.cache/wsvs_ros/engines` when XDG_CACHE_HOME is unset or empty."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wsvs_ros" / "engines"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(*parts: object) -> str:
    """16 hex digits of sha256 over the parts' JSON (stable across processes and Python versions)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Readers see the old file or the new one, never a truncated one; the temporary file is removed on any failure.
    """
    with atomic_write(path) as f:
        f.write(data)


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT plan depends on; a plan is used only when its stored key equals the current one.

    Attributes:
        onnx_sha256: hex sha256 of the ONNX file the plan was built from.
        tensorrt_version: `tensorrt.__version__` at build time, e.g. "10.3.0" (plans do not cross versions).
        gpu_name: the CUDA device name, e.g. "Orin".
        compute_capability: (major, minor), e.g. (8, 7) on Jetson Orin.
        precision: "fp32", "fp16" or "int8".
        input_shapes: ((input name, shape), ...) in the network's input order, e.g. (("rgb", (1, 3, 256, 512)), ...).
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx_sha256,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": list(self.compute_capability),
            "precision": self.precision,
            "input_shapes": [[name, list(shape)] for name, shape in self.input_shapes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineKey:
        """Raises KeyError, TypeError or ValueError for a malformed dict."""
        major, minor = d["compute_capability"]
        return cls(
            onnx_sha256=str(d["onnx_sha256"]),
            tensorrt_version=str(d["tensorrt_version"]),
            gpu_name=str(d["gpu_name"]),
            compute_capability=(int(major), int(minor)),
            precision=str(d["precision"]),
            input_shapes=tuple((str(name), tuple(int(n) for n in shape)) for name, shape in d["input_shapes"]),
        )

    def digest(self) -> str:
        """Short stable hash of the whole key."""
        return short_hash(self.to_dict())

    def file_stem(self) -> str:
        """`<precision>-<hash of model and input shapes>`: one slot per model and precision (see the module doc)."""
        d = self.to_dict()
        return f"{self.precision}-{short_hash(d['onnx_sha256'], d['precision'], d['input_shapes'])}"


def describe_key_change(built: EngineKey, current: EngineKey) -> str:
    """Why a plan built for `built` cannot serve `current`, in words a user acts on ("" when the keys are equal)."""
    changes = []
    if built.tensorrt_version != current.tensorrt_version:
        changes.append(
            f"it was built with TensorRT {built.tensorrt_version}, this is TensorRT {current.tensorrt_version}"
        )
    if (built.gpu_name, built.compute_capability) != (current.gpu_name, current.compute_capability):
        changes.append(
            f"it was built on GPU {built.gpu_name!r} (compute {_cc(built)}), this is {current.gpu_name!r} "
            f"(compute {_cc(current)})"
        )
    if built.onnx_sha256 != current.onnx_sha256:
        changes.append("the ONNX model changed since it was built")
    if built.precision != current.precision:
        changes.append(f"it is {built.precision}, {current.precision} was asked for")
    if built.input_shapes != current.input_shapes:
        changes.append(f"its input shapes {dict(built.input_shapes)} differ from {dict(current.input_shapes)}")
    return "; ".join(changes)


def _cc(key: EngineKey) -> str:
    return ".".join(str(n) for n in key.compute_capability)


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar of a cached plan.

    Attributes:
        key: what the plan was built for.
        plan_size, plan_sha256: the plan file's size in bytes and hex sha256 (a truncated or corrupt plan fails them).
        built_at: UTC build time, ISO 8601.
        build_seconds: wall-clock duration of the TensorRT build.
        check: the accuracy check against a reference runtime (`AccuracyCheck.to_dict()`), or {"skipped": reason}.
        info: provenance: ONNX path, workspace limit, calibration source, device memory, ...
    """

    key: EngineKey
    plan_size: int
    plan_sha256: str
    built_at: str
    build_seconds: float
    check: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SIDECAR_FORMAT,
            "key": self.key.to_dict(),
            "plan_size": self.plan_size,
            "plan_sha256": self.plan_sha256,
            "built_at": self.built_at,
            "build_seconds": self.build_seconds,
            "check": self.check,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineRecord:
        """Raises KeyError, TypeError or ValueError for a malformed or other-format sidecar."""
        if d.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"sidecar format {d.get('format')!r}, this wsvs_ros reads {SIDECAR_FORMAT}")
        return cls(
            key=EngineKey.from_dict(d["key"]),
            plan_size=int(d["plan_size"]),
            plan_sha256=str(d["plan_sha256"]),
            built_at=str(d["built_at"]),
            build_seconds=float(d["build_seconds"]),
            check=dict(d.get("check") or {}),
            info=dict(d.get("info") or {}),
        )


@dataclass(frozen=True)
class CacheLookup:
    """Where a key's plan lives and whether it can be used.

    Attributes:
        plan_path, sidecar_path: the slot's files (they may not exist).
        record: the sidecar, when it could be read.
        reason: why the plan must be (re)built, or None when it is valid for the key.
    """

    plan_path: Path
    sidecar_path: Path
    record: EngineRecord | None
    reason: str | None

    @property
    def hit(self) -> bool:
        return self.reason is None


def slot_paths(key: EngineKey, cache_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(plan, sidecar) paths of `key`'s slot in `cache_dir`."""
    stem = Path(cache_dir) / key.file_stem()
    return stem.with_suffix(".plan"), stem.with_suffix(".json")


def timing_cache_path(
    cache_dir: str | os.PathLike[str], *, tensorrt_version: str, gpu_name: str, compute_capability: tuple[int, int]
) -> Path:
    """TensorRT's timing cache for one TensorRT version and GPU, shared by every model built there."""
    return Path(cache_dir) / f"timing-{short_hash(tensorrt_version, gpu_name, list(compute_capability))}.cache"


def lookup(key: EngineKey, cache_dir: str | os.PathLike[str]) -> CacheLookup:
    """Decide whether `key`'s cached plan can be loaded, reading only the sidecar and the plan's bytes.

    Reasons to rebuild: nothing built yet; a plan without its sidecar; an unreadable or corrupt sidecar; a key
    mismatch (TensorRT upgraded, another GPU, the ONNX changed); a missing plan; a plan whose size or sha256 differs
    from the sidecar's (truncated or corrupt). Never raises for the cache's contents.
    """
    plan_path, sidecar_path = slot_paths(key, cache_dir)

    def miss(reason: str, record: EngineRecord | None = None) -> CacheLookup:
        return CacheLookup(plan_path, sidecar_path, record, reason)

    if not sidecar_path.exists():
        if plan_path.exists():
            return miss(f"plan {plan_path.name} has no sidecar {sidecar_path.name} (an interrupted build)")
        return miss("no engine has been built for this model and precision yet")
    try:
        record = EngineRecord.from_dict(json.loads(sidecar_path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        return miss(f"sidecar {sidecar_path.name} is unreadable ({type(e).__name__}: {e})")
    if record.key != key:
        return miss(describe_key_change(record.key, key), record)
    if not plan_path.exists():
        return miss(f"plan {plan_path.name} is missing", record)
    size = plan_path.stat().st_size
    if size != record.plan_size:
        return miss(f"plan {plan_path.name} is {size} bytes, its sidecar says {record.plan_size} (truncated?)", record)
    if file_sha256(plan_path) != record.plan_sha256:
        return miss(f"plan {plan_path.name} does not match the sha256 in its sidecar (corrupt)", record)
    return CacheLookup(plan_path, sidecar_path, record, None)


def store(
    key: EngineKey,
    plan: bytes,
    cache_dir: str | os.PathLike[str],
    *,
    build_seconds: float,
    check: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
) -> CacheLookup:
    """Write `plan` and its sidecar into `key`'s slot (atomically, sidecar last) and return the slot as a hit."""
    plan = bytes(plan)
    plan_path, sidecar_path = slot_paths(key, cache_dir)
    record = EngineRecord(
        key=key,
        plan_size=len(plan),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(float(build_seconds), 3),
        check=dict(check or {}),
        info=dict(info or {}),
    )
    atomic_write_bytes(plan_path, plan)
    atomic_write_bytes(sidecar_path, (json.dumps(record.to_dict(), indent=2) + "\n").encode())
    return CacheLookup(plan_path, sidecar_path, record, None)
