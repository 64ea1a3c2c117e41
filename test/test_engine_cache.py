"""The TensorRT engine cache: keys, sidecars, and the rebuild decision for every way a cached plan goes stale."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from wsvs_ros.engine import engine_cache
from wsvs_ros.engine.engine_cache import (
    EngineKey,
    atomic_write_bytes,
    default_cache_dir,
    file_sha256,
    lookup,
    slot_paths,
    store,
    timing_cache_path,
)

KEY = EngineKey(
    onnx_sha256="ab" * 32,
    tensorrt_version="10.3.0",
    gpu_name="Orin",
    compute_capability=(8, 7),
    precision="fp16",
    input_shapes=(("rgb", (1, 3, 256, 512)), ("flow", (1, 20, 256, 512))),
)
PLAN = bytes(range(256)) * 64  # stands in for a serialized engine: the cache only stores and checks bytes


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cache_dir_follows_xdg_cache_home_and_falls_back_to_home_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/var/cache/me"}) == Path("/var/cache/me/wsvs_ros/engines")
    monkeypatch.setenv("HOME", "/home/driver")
    assert default_cache_dir({}) == Path("/home/driver/.cache/wsvs_ros/engines")
    assert default_cache_dir({"XDG_CACHE_HOME": ""}) == Path("/home/driver/.cache/wsvs_ros/engines")


def test_file_sha256_is_the_sha256_of_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(5 * (1 << 20) // 2)  # 2.5 MiB: several read chunks
    (tmp_path / "model.onnx").write_bytes(data)
    assert file_sha256(tmp_path / "model.onnx") == hashlib.sha256(data).hexdigest()


def test_key_hashes_are_pinned_so_engines_built_in_the_field_stay_valid_across_releases() -> None:
    # Literal values: a change to the hashing (or to str/int/tuple handling) renames every cached plan.
    assert KEY.digest() == "260268b9abc78d5f"
    assert KEY.file_stem() == "fp16-a372360a1ef60594"


def test_key_survives_its_json_sidecar() -> None:
    again = EngineKey.from_dict(json.loads(json.dumps(KEY.to_dict())))
    assert again == KEY and again.digest() == KEY.digest()


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "cd" * 32},
        {"tensorrt_version": "8.6.2"},
        {"gpu_name": "NVIDIA H100 80GB HBM3"},
        {"compute_capability": (9, 0)},
        {"precision": "int8"},
        {"input_shapes": (("rgb", (1, 3, 128, 256)), ("flow", (1, 20, 128, 256)))},
    ],
)
def test_any_field_change_gives_another_key(change: dict) -> None:
    other = dataclasses.replace(KEY, **change)
    assert other != KEY
    assert other.digest() != KEY.digest()


def test_plan_file_name_depends_on_model_and_precision_only() -> None:
    upgraded = dataclasses.replace(KEY, tensorrt_version="10.7.0", gpu_name="Orin Nano", compute_capability=(8, 7))
    assert upgraded.file_stem() == KEY.file_stem()  # an upgrade rebuilds into the same slot, no stale plan left
    assert dataclasses.replace(KEY, precision="fp32").file_stem() != KEY.file_stem()
    assert dataclasses.replace(KEY, onnx_sha256="cd" * 32).file_stem() != KEY.file_stem()
    assert KEY.file_stem().startswith("fp16-")


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        dataclasses.replace(KEY, precision="bf16")


def test_stored_engine_is_found_with_its_sidecar(tmp_path: Path) -> None:
    check = {"label_agreement": 99.9, "max_abs_diff": 0.01, "passed": True}
    stored = store(KEY, PLAN, tmp_path, build_seconds=312.25, check=check, info={"workspace_mb": 1024})
    found = lookup(KEY, tmp_path)
    assert found.hit and found.reason is None
    assert found.plan_path == stored.plan_path and found.plan_path.read_bytes() == PLAN
    assert found.record == stored.record
    assert found.record is not None
    assert found.record.key == KEY
    assert found.record.plan_size == len(PLAN)
    assert found.record.plan_sha256 == hashlib.sha256(PLAN).hexdigest()
    assert found.record.build_seconds == 312.25
    assert found.record.check == check and found.record.info == {"workspace_mb": 1024}
    assert found.record.built_at.endswith("+00:00")


def test_nothing_built_yet_is_a_miss_with_that_reason(tmp_path: Path) -> None:
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert "no engine has been built" in found.reason


def test_truncated_plan_is_rebuilt(tmp_path: Path) -> None:
    plan_path = store(KEY, PLAN, tmp_path, build_seconds=1).plan_path
    plan_path.write_bytes(PLAN[: len(PLAN) // 2])
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert f"{len(PLAN) // 2} bytes" in found.reason and "truncated" in found.reason


def test_corrupt_plan_of_the_right_size_is_rebuilt(tmp_path: Path) -> None:
    plan_path = store(KEY, PLAN, tmp_path, build_seconds=1).plan_path
    corrupt = bytearray(PLAN)
    corrupt[1000] ^= 0xFF
    plan_path.write_bytes(bytes(corrupt))
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert "sha256" in found.reason and "corrupt" in found.reason


@pytest.mark.parametrize(
    "sidecar",
    [b"{not json", b"\xff\xfe binary", b'{"format": 1, "key": {}}', b'{"format": 99}', b"[]"],
    ids=["bad-json", "not-utf8", "missing-fields", "other-format", "not-an-object"],
)
def test_unreadable_sidecar_is_rebuilt_not_a_crash(tmp_path: Path, sidecar: bytes) -> None:
    store(KEY, PLAN, tmp_path, build_seconds=1)
    _, sidecar_path = slot_paths(KEY, tmp_path)
    sidecar_path.write_bytes(sidecar)
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert "unreadable" in found.reason and found.record is None


def test_tensorrt_upgrade_is_rebuilt_naming_both_versions(tmp_path: Path) -> None:
    store(dataclasses.replace(KEY, tensorrt_version="8.6.2"), PLAN, tmp_path, build_seconds=1)
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert "built with TensorRT 8.6.2, this is TensorRT 10.3.0" in found.reason
    assert found.record is not None and found.record.key.tensorrt_version == "8.6.2"


def test_plan_from_another_gpu_is_rebuilt_naming_both_gpus(tmp_path: Path) -> None:
    workstation = dataclasses.replace(KEY, gpu_name="NVIDIA RTX A4000", compute_capability=(8, 6))
    store(workstation, PLAN, tmp_path, build_seconds=1)
    found = lookup(KEY, tmp_path)
    assert not found.hit
    assert "'NVIDIA RTX A4000' (compute 8.6), this is 'Orin' (compute 8.7)" in found.reason


def test_plan_without_sidecar_reads_as_an_interrupted_build(tmp_path: Path) -> None:
    plan_path, _ = slot_paths(KEY, tmp_path)
    plan_path.write_bytes(PLAN)
    found = lookup(KEY, tmp_path)
    assert not found.hit and "interrupted" in found.reason


def test_sidecar_without_plan_is_rebuilt(tmp_path: Path) -> None:
    store(KEY, PLAN, tmp_path, build_seconds=1).plan_path.unlink()
    found = lookup(KEY, tmp_path)
    assert not found.hit and "missing" in found.reason


def test_rebuild_after_upgrade_replaces_the_stale_plan_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store(dataclasses.replace(KEY, tensorrt_version="8.6.2"), PLAN, tmp_path, build_seconds=1)
    store(KEY, PLAN[::-1], tmp_path, build_seconds=1)
    assert _files(tmp_path) == sorted([f"{KEY.file_stem()}.json", f"{KEY.file_stem()}.plan"])
    assert lookup(KEY, tmp_path).hit


def test_failed_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "engine.plan"
    atomic_write_bytes(target, b"old plan")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine_cache.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new plan")
    assert target.read_bytes() == b"old plan"
    assert _files(tmp_path) == ["engine.plan"]


def test_timing_cache_is_one_file_per_tensorrt_version_and_gpu(tmp_path: Path) -> None:
    orin = timing_cache_path(tmp_path, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7))
    assert orin == timing_cache_path(tmp_path, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability=(8, 7))
    assert orin != timing_cache_path(tmp_path, tensorrt_version="8.6.2", gpu_name="Orin", compute_capability=(8, 7))
    assert orin != timing_cache_path(tmp_path, tensorrt_version="10.3.0", gpu_name="A4000", compute_capability=(8, 6))
    assert orin.parent == tmp_path and orin.suffix == ".cache"
