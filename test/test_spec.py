"""ModelSpec: the preprocessing metadata round-trips and names whatever is wrong with it."""

from __future__ import annotations

import pytest

from wsvs_ros.labels import DRIVE
from wsvs_ros.spec import ModelSpec


def make(**kw) -> ModelSpec:
    return ModelSpec(DRIVE.name, DRIVE.names, **kw)


def test_spec_round_trips_through_a_dict() -> None:
    spec = make(window="centered", flow_params={"levels": 4}, width=0.25, output_stride=8)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    lite = make(backbone="efficientnet_lite0", backbone_weights="package==0.1.0 a.pth sha256=0")
    assert ModelSpec.from_dict(lite.to_dict()) == lite
    assert spec.delay_frames == 5 and make().delay_frames == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window", "future", "window must be one of"),
        ("flow_length", 0, "flow_length must be a positive integer"),
        ("flow_method", "raft", "flow_method must be one of"),
        ("flow_scale", float("nan"), "flow_scale must be a positive number"),
        ("rgb_std", (0.2, 0.2), "rgb_std must have 3 values"),
        ("width", -1.0, "width must be a positive number"),
        ("output_stride", 4, "output_stride must be one of"),
        ("backbone", "resnet50", "backbone must be one of"),
    ],
)
def test_invalid_fields_are_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**{field: value})


def test_class_names_must_match_the_label_set() -> None:
    with pytest.raises(ValueError, match="do not match label set 'drive'"):
        ModelSpec("drive", ("road", "sky"))


def test_metadata_from_another_version_or_with_unknown_fields_is_refused() -> None:
    d = make().to_dict()
    with pytest.raises(ValueError, match="format_version is 99"):
        ModelSpec.from_dict({**d, "format_version": 99})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour_space'\]"):
        ModelSpec.from_dict({**d, "colour_space": "bgr"})
    del d["label_set"]
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['label_set'\]"):
        ModelSpec.from_dict(d)


def test_metadata_written_before_output_stride_existed_is_the_papers_stride_32() -> None:
    d = make().to_dict()
    del d["output_stride"]
    assert ModelSpec.from_dict(d).output_stride == 32


def test_metadata_written_before_backbones_existed_is_vgg16_of_unrecorded_origin() -> None:
    d = make().to_dict()
    del d["backbone"], d["backbone_weights"]
    spec = ModelSpec.from_dict(d)
    assert spec.backbone == "vgg16" and spec.backbone_weights == "unrecorded"
    assert make().backbone_weights == "random", "a spec made in code describes a freshly initialised net"
