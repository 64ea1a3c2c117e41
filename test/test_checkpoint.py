"""Checkpoints: weights and metadata in one file, written atomically, validated on load."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_spec

from wsvs_ros.model.checkpoint import build_model, default_model_path, load_checkpoint, save_checkpoint


def test_checkpoint_round_trips_weights_spec_and_info(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    assert ckpt.spec == tiny_spec()
    assert ckpt.info == {"trained_with": "test fixture"}
    torch.manual_seed(0)
    fresh = build_model(tiny_spec()).state_dict()
    for name, tensor in ckpt.model.state_dict().items():
        assert torch.equal(tensor, fresh[name]), name
    assert not ckpt.model.training
    assert [p.name for p in tiny_checkpoint.parent.iterdir()] == ["tiny.pt"], "no temporary file may be left"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip")
    with pytest.raises(ValueError, match="not a readable wsvs_ros checkpoint"):
        load_checkpoint(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain)
    with pytest.raises(ValueError, match="not a wsvs_ros checkpoint"):
        load_checkpoint(plain)


def test_bad_metadata_names_the_field(tmp_path: Path, tiny_checkpoint: Path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["spec"]["window"] = "sideways"
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(ValueError, match="bad model metadata: window must be one of"):
        load_checkpoint(bad)


def test_weights_that_do_not_fit_the_metadata_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    save_checkpoint(path, build_model(tiny_spec(width=1 / 16)), tiny_spec())
    with pytest.raises(ValueError, match="weights do not match the network its metadata describes"):
        load_checkpoint(path)


def test_checkpoints_get_the_usual_file_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "m.pt", build_model(tiny_spec()), tiny_spec())
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o644, "readable by the user the node runs as"


def one_line_refusal(path: Path) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message, message
    assert "weights_only=False" not in message and "will likely succeed" not in message, message
    return message


def test_an_empty_file_is_named_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    assert one_line_refusal(tmp_path / "empty.pt").endswith(
        "empty.pt is empty (0 bytes); the copy or download that made it failed"
    )


def test_random_bytes_are_refused_in_one_line_without_offering_to_unpickle_them(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    assert "is not a readable wsvs_ros checkpoint: not a file torch.save wrote" in one_line_refusal(path)


def test_a_pickled_object_is_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(1, 1), path)  # a whole module: unpickling it would import and run code
    assert "holds Python objects, not only tensors" in one_line_refusal(path)


def test_a_missing_tensor_is_named_in_one_line(tmp_path: Path, tiny_checkpoint: Path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    del payload["state_dict"]["rgb_stream.convs.0.weight"]
    path = tmp_path / "missing.pt"
    torch.save(payload, path)
    message = one_line_refusal(path)
    assert message.endswith("weights do not match the network its metadata describes: 1 tensor(s) missing "
                            "(rgb_stream.convs.0.weight)"), message  # fmt: skip


def test_a_directory_given_as_the_model_is_called_a_directory(tmp_path: Path, tiny_checkpoint: Path) -> None:
    message = one_line_refusal(tmp_path)
    assert (
        message == f"model {tmp_path} is a directory, not a model file; pass the .pt or .onnx file itself "
        "(it holds tiny.pt)"
    )


def test_a_checkpoint_written_before_backbones_loads_as_vgg16(tmp_path: Path, tiny_checkpoint: Path) -> None:
    payload = torch.load(tiny_checkpoint, weights_only=True)
    del payload["spec"]["backbone"], payload["spec"]["backbone_weights"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    ckpt = load_checkpoint(old)
    assert ckpt.spec.backbone == "vgg16" and ckpt.model.backbone == "vgg16"
    assert ckpt.spec.backbone_weights == "unrecorded"
    for name, tensor in load_checkpoint(tiny_checkpoint).model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[name], tensor), name


def test_the_shipped_model_loads_as_a_vgg16_net() -> None:
    path = default_model_path()
    if not path.is_file():
        pytest.skip("this install has no wsvs_ros/data/default_model.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.spec.backbone == "vgg16" and ckpt.model.backbone == "vgg16"
