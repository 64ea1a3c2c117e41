"""Label sets: every set knows road, sidewalk and vegetation; lookups by name, id and colour."""

from __future__ import annotations

import numpy as np
import pytest

from wsvs_ros.labels import CAMVID, CITYSCAPES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, DRIVE, LABEL_SETS, get_label_set


@pytest.mark.parametrize("label_set", LABEL_SETS.values(), ids=LABEL_SETS.keys())
def test_road_sidewalk_and_vegetation_exist_in_every_set(label_set) -> None:
    for name in ("road", "sidewalk", "vegetation"):
        assert label_set.by_name(name).name == name


def test_cityscapes_has_the_19_train_ids_with_official_colours() -> None:
    assert len(CITYSCAPES) == 19
    assert CITYSCAPES.by_id(0).name == "road" and CITYSCAPES.by_id(0).color == (128, 64, 128)
    assert CITYSCAPES.by_id(8).name == "vegetation" and CITYSCAPES.by_id(8).color == (107, 142, 35)
    assert CITYSCAPES.by_name("Traffic Sign").id == 7
    assert sorted(CITYSCAPES_LABEL_ID_TO_TRAIN_ID.values()) == list(range(19))
    assert CITYSCAPES_LABEL_ID_TO_TRAIN_ID[7] == CITYSCAPES.by_name("road").id


def test_camvid_names_its_classes_as_the_dataset_does_too() -> None:
    assert len(CAMVID) == 11
    assert CAMVID.by_name("Pavement") is CAMVID.by_name("sidewalk")
    assert CAMVID.by_name("tree") is CAMVID.by_name("vegetation")


def test_lookup_by_colour_and_unknown_names_are_explained() -> None:
    assert DRIVE.by_color((70, 130, 180)).name == "sky"
    with pytest.raises(KeyError, match="has no class 'lava'.*road"):
        DRIVE.by_name("lava")
    with pytest.raises(KeyError, match="no class id 8"):
        DRIVE.by_id(8)
    with pytest.raises(KeyError, match="known: cityscapes"):
        get_label_set("kitti")


def test_colorize_maps_ids_to_colours_and_void_to_black() -> None:
    labels = np.array([[0, 2], [255, 4]], np.uint8)
    rgb = DRIVE.colorize(labels)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[1, 0]) == (0, 0, 0)


def test_classes_shared_with_imagenet_are_mapped() -> None:
    assert 817 in CITYSCAPES.by_name("car").imagenet_ids  # sports car
    assert CITYSCAPES.by_name("road").imagenet_ids == ()
