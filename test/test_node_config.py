"""The node's configuration: each bad parameter refused by name, the default model, the checks against the model."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_spec

import wsvs_ros
from wsvs_ros.engine import tensorrt_build, tensorrt_cache
from wsvs_ros.engine.tensorrt_cache import EngineNotBuiltError
from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model, save_checkpoint
from wsvs_ros.node import config as node_config
from wsvs_ros.node.config import (
    PARAMETERS,
    READY_MESSAGE,
    NodeConfig,
    StartupError,
    check_known,
    default_model_path,
    load_model,
    mask_class_ids,
    resolve_model_path,
)

REPO = Path(__file__).resolve().parents[1]


def config(**params: object) -> NodeConfig:
    return NodeConfig.from_params(params)


def test_defaults_segment_the_raw_camera_topic_newest_frame_first() -> None:
    cfg = config()
    assert cfg.input_topic == "/camera/image_raw"
    assert (cfg.backend, cfg.device, cfg.precision, cfg.window) == ("torch", "cpu", "auto", "")
    assert cfg.publish_classes == ("road", "sidewalk", "vegetation")
    assert (cfg.qos_reliability, cfg.queue_size) == ("best_effort", 1)
    assert cfg.max_gap_s == 0.5


def test_every_parameter_is_a_config_field_in_the_same_order() -> None:
    assert [p.name for p in PARAMETERS] == [f.name for f in fields(NodeConfig)]
    assert all(p.description.strip() for p in PARAMETERS)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("backend", "trt", "backend must be one of torch, onnxruntime, tensorrt"),
        ("device", "gpu", "device must be cpu, cuda or cuda:N"),
        ("device", "cuda:x", "device must be cpu, cuda or cuda:N"),
        ("precision", "int4", "precision must be one of auto, fp32, fp16, int8"),
        ("camera_topic", "", "camera_topic must be a topic name"),
        ("camera_topic", "/camera/image raw", "camera_topic must be a topic name"),
        ("window", "future", "window must be one of '', causal, centered"),
        ("publish_classes", ["road", " "], "publish_classes must be class names"),
        ("max_gap", -0.1, "max_gap must be seconds >= 0"),
        ("max_gap", math.nan, "max_gap must be seconds >= 0"),
        ("max_gap", math.inf, "max_gap must be seconds >= 0"),
        ("crf_iterations", -1, "crf_iterations must be >= 0"),
        ("qos_reliability", "reliable_ish", "qos_reliability must be one of best_effort, reliable"),
        ("queue_size", 0, "queue_size must be at least 1"),
    ],
)
def test_a_bad_value_is_refused_naming_the_parameter(name: str, value: object, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        config(**{name: value})


@pytest.mark.parametrize(
    ("name", "value", "kind"),
    [
        ("queue_size", "1", "an integer"),
        ("queue_size", True, "an integer"),
        ("compressed", "true", "a boolean"),
        ("max_gap", "0.5", "a number of seconds"),
        ("model", None, "a string"),
        ("publish_classes", "road", "a list of strings"),
        ("publish_classes", ["road", 3], "a list of strings"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_parameter(name: str, value: object, kind: str) -> None:
    with pytest.raises(ValueError, match=f"parameter {name} must be {kind}"):
        config(**{name: value})


def test_an_unknown_parameter_is_refused_naming_the_nearest_known_one() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter 'camera' \(did you mean 'camera_topic'\?\); the node's"):
        config(camera="/camera/image_raw")


def test_an_integer_max_gap_is_read_as_seconds_and_zero_never_restarts() -> None:
    assert config(max_gap=2).max_gap == 2.0
    assert config(max_gap=0.0).max_gap_s is None


def test_compressed_subscribes_to_the_image_transport_topic() -> None:
    assert config(compressed=True, camera_topic="/front/image_raw").input_topic == "/front/image_raw/compressed"
    assert config(compressed=True, camera_topic="/front/image_raw/").input_topic == "/front/image_raw/compressed"


def test_compressed_with_a_topic_already_ending_in_compressed_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"already ends in /compressed.*give the raw image topic"):
        config(compressed=True, camera_topic="/front/image_raw/compressed")


def test_the_default_model_is_the_package_data_file() -> None:
    assert default_model_path() == Path(wsvs_ros.__file__).parent / "data" / "default_model.pt"


def test_an_empty_model_uses_the_default_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = tmp_path / "default_model.pt"
    installed.write_bytes(b"weights")
    monkeypatch.setattr(node_config, "default_model_path", lambda: installed)
    assert resolve_model_path("") == installed


def test_a_missing_default_model_says_how_to_pass_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "data" / "default_model.pt"
    monkeypatch.setattr(node_config, "default_model_path", lambda: missing)
    with pytest.raises(StartupError, match=rf"default model {re.escape(str(missing))} is not installed.*model:="):
        resolve_model_path("")


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"model file .*nope\.pt does not exist; check the model parameter"):
        resolve_model_path(str(tmp_path / "nope.pt"))


def test_a_model_path_under_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "model.pt").write_bytes(b"weights")
    assert resolve_model_path("~/model.pt") == tmp_path / "model.pt"


def test_a_loaded_model_segments_frames_and_resolves_the_mask_classes(tiny_checkpoint: Path) -> None:
    model = load_model(
        config(model=str(tiny_checkpoint), publish_classes=["road", "vegetation"], max_gap=1.5, crf_iterations=3)
    )
    assert model.path == tiny_checkpoint and model.label_set is DRIVE
    assert model.mask_class_ids == (DRIVE.by_name("road").id, DRIVE.by_name("vegetation").id)
    assert model.segmenter.window.max_gap == 1.5 and model.segmenter.crf_iterations == 3
    (result,) = model.segmenter.push(np.zeros((24, 40, 3), np.uint8), stamp=1.0)
    assert result.labels.shape == (24, 40)


def test_a_window_that_contradicts_the_model_is_refused(tiny_checkpoint: Path) -> None:
    with pytest.raises(StartupError, match=r"window 'centered' contradicts the model.*trained with a 'causal' window"):
        load_model(config(model=str(tiny_checkpoint), window="centered"))


def test_a_window_that_agrees_with_the_model_is_accepted() -> None:
    spec = tiny_spec(window="centered")
    assert mask_class_ids(config(window="centered"), spec) == (0, 1, 2)


def test_an_unknown_class_is_refused_listing_the_model_classes() -> None:
    with pytest.raises(StartupError, match=r"publish_classes: .*no class 'lane'; it has road, sidewalk, vegetation"):
        mask_class_ids(config(publish_classes=["road", "lane"]), tiny_spec())


def test_the_same_class_twice_is_refused() -> None:
    with pytest.raises(StartupError, match="names a class twice"):
        mask_class_ids(config(publish_classes=["road", "Road"]), tiny_spec())


def test_a_checkpoint_for_tensorrt_names_the_export_command(tiny_checkpoint: Path) -> None:
    with pytest.raises(StartupError, match=r"cannot load .*tiny\.pt \(tensorrt on cuda\).*wsvs export"):
        load_model(config(model=str(tiny_checkpoint), backend="tensorrt", device="cuda"))


def test_a_tensorrt_engine_not_built_yet_gives_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"exported")
    command = tensorrt_build.build_engine_command(onnx, precision="fp16")

    def not_built(*args: object, **kwargs: object) -> None:
        raise EngineNotBuiltError(f"no usable TensorRT fp16 engine for model.onnx: {command}", command=command)

    monkeypatch.setattr(tensorrt_cache, "load_tensorrt_engine", not_built)
    with pytest.raises(StartupError, match=re.escape(command)):
        load_model(config(model=str(onnx), backend="tensorrt", device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_to_use_the_cpu(tiny_checkpoint: Path) -> None:
    with pytest.raises(StartupError, match="use device cpu"):
        load_model(config(model=str(tiny_checkpoint), device="cuda"))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(StartupError, match=r"cannot load .*junk\.pt .*not a readable wsvs_ros checkpoint"):
        load_model(config(model=str(junk)))


def test_a_centered_checkpoint_loads_with_its_own_window(tmp_path: Path) -> None:
    spec = tiny_spec(window="centered")
    path = tmp_path / "centered.pt"
    save_checkpoint(path, build_model(spec), spec)
    assert load_model(config(model=str(path))).spec.window == "centered"


def test_the_shipped_yaml_sets_every_parameter_to_its_default_with_a_comment() -> None:
    text = (REPO / "config" / "segment.yaml").read_text()
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert list(params) == [p.name for p in PARAMETERS]
    for p in PARAMETERS:
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        assert params[p.name] == default and type(params[p.name]) is type(default), p.name
    lines = text.splitlines()
    for p in PARAMETERS:
        (i,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"{p.name}:")]
        assert lines[i - 1].strip().startswith("#"), f"{p.name} has no comment in config/segment.yaml"
    assert NodeConfig.from_params(params) == config()


def test_the_launch_file_waits_for_the_line_the_node_logs_when_ready() -> None:
    launch_file = (REPO / "launch" / "segment.launch.py").read_text()
    assert f'READY_MESSAGE = "{READY_MESSAGE}"' in launch_file


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("input_width", None), ("crf_iteration", "crf_iterations"), ("modle", "model"), ("max_gaps", "max_gap")],
)
def test_a_misspelled_parameter_names_the_parameter_meant(typo: str, meant: str | None) -> None:
    with pytest.raises(ValueError) as e:
        check_known(["model", typo])
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"unknown parameter {typo!r}")
    assert (f"(did you mean {meant!r}?)" in message) if meant else "did you mean" not in message


def test_parameters_every_ros_node_has_are_not_unknown() -> None:
    check_known(["use_sim_time", "start_type_description_service", "qos_overrides./camera.subscription.depth"])


def test_the_launch_test_imports_outside_pytest_as_launch_test_loads_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    # launch_test imports the file by path, with neither test/ nor a conftest on sys.path.
    load = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('test_launch', sys.argv[1]); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )
    run = subprocess.run(
        [sys.executable, "-c", load, str(REPO / "test" / "test_launch.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # Where ROS is missing the file stops at its importorskip, which comes after the test helpers' imports.
    last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
    assert run.returncode == 0 or last.startswith("Skipped: could not import"), run.stderr


def test_the_test_extra_resolves_to_a_pytest_the_launch_testing_plugin_loads_under() -> None:
    from packaging.requirements import Requirement

    setup = (REPO / "setup.py").read_text()
    (pin,) = re.findall(r'"(pytest[<>=!,.\d]*)"', setup)
    allowed = Requirement(pin).specifier
    assert "7.4.4" in allowed, "Jazzy's python3-pytest"
    assert "9.1.1" not in allowed and "8.4.2" not in allowed, "ros2/launch#979 and #991"
