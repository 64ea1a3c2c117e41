"""Classifier heatmaps (paper 3.1): FCN conversion, ImageNet VGG-16 files, iconic one-vs-all classifiers, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from weak_fixtures import noisy_colour, write_during_first_save, write_iconic, write_tiny_drives

from wsvs_ros.labels import CITYSCAPES, DRIVE
from wsvs_ros.model.vgg_init import VGG16_STATE_SHAPES
from wsvs_training.datasets.synth_drives import synth_clips
from wsvs_training.heatmaps import (
    HeatmapCache,
    HeatmapSource,
    VGGClassifier,
    _normalise,
    fully_convolutional,
    heatmap_source,
    load_iconic_classifier,
    load_imagenet_vgg16,
    save_iconic_classifier,
    train_iconic_classifier,
)
from wsvs_training.heatmaps import _augment as augment_iconic
from wsvs_training.losses import binary_masks

SMALL_VGG_BLOCKS = ((4, 4), (8, 8), (8, 8, 8), (8, 8, 8), (8, 8, 8))  # VGG-16's layout, few channels


def tiny_iconic(outputs: int) -> VGGClassifier:
    """An untrained iconic classifier of three 4-channel blocks, in eval mode (deterministic heatmaps)."""
    return VGGClassifier(((4,), (4,), (4,)), grid=5, hidden=8, num_outputs=outputs).eval()


def test_fully_convolutional_centre_equals_the_classifiers_logits_at_224() -> None:
    torch.manual_seed(0)
    classifier = VGGClassifier(SMALL_VGG_BLOCKS, grid=7, hidden=16, num_outputs=10).eval()
    x = torch.randn(2, 3, 224, 224)
    fcn = fully_convolutional(classifier)
    scores = fcn(x)
    assert scores.shape == (2, 10, 7, 7)
    torch.testing.assert_close(scores[:, :, 3, 3], classifier(x), rtol=1e-4, atol=1e-5)


def test_fully_convolutional_gives_a_map_on_larger_frames() -> None:
    classifier = VGGClassifier(SMALL_VGG_BLOCKS, grid=7, hidden=16, num_outputs=10).eval()
    assert fully_convolutional(classifier)(torch.randn(1, 3, 128, 256)).shape == (1, 10, 4, 8)


@pytest.mark.slow
def test_imagenet_heatmaps_sum_the_softmax_of_each_class_imagenet_ids(vgg16_file: Path) -> None:
    vgg = load_imagenet_vgg16(vgg16_file)
    fcn = fully_convolutional(vgg)
    names = tuple(c.name for c in CITYSCAPES.classes if not c.imagenet_ids)
    iconic = tiny_iconic(len(names))
    source = HeatmapSource(CITYSCAPES, (fully_convolutional(iconic), names), fcn)
    image = torch.rand(1, 3, 32, 32) * 255
    heat = source(image)
    assert heat.shape == (1, len(CITYSCAPES), 4, 4)
    x = (image / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    probs = fcn(x).softmax(dim=1)[0, :, 0, 0]  # a 32 x 32 frame gives one position
    car = CITYSCAPES.by_name("car")
    torch.testing.assert_close(heat[0, car.id], probs[list(car.imagenet_ids)].sum().expand(4, 4))


def test_imagenet_state_dict_with_a_wrong_shape_names_the_key() -> None:
    state = {k: torch.zeros(1) for k in VGG16_STATE_SHAPES}
    with pytest.raises(ValueError, match=r"'features.0.weight' has shape"):
        load_imagenet_vgg16(state)
    with pytest.raises(ValueError, match=r"lacks \['classifier.6.bias'\]"):
        load_imagenet_vgg16({k: v for k, v in state.items() if k != "classifier.6.bias"})


def test_every_class_needs_a_heatmap_source() -> None:
    iconic = tiny_iconic(2)
    with pytest.raises(ValueError, match="class 'sidewalk' has no heatmap source"):
        HeatmapSource(DRIVE, (fully_convolutional(iconic), ("road", "car")))


def test_iconic_one_vs_all_classifier_learns_and_its_file_round_trips(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=1, frames=1)
    names = ("road", "vegetation", "sky")
    model, info = train_iconic_classifier(tmp_path / "d/iconic", names, epochs=30, lr=3e-3, seed=0, log=False)
    assert info["train_accuracy"] == 1.0  # three flat class colours are easy
    save_iconic_classifier(tmp_path / "iconic.pt", model, names, info)
    loaded, loaded_names = load_iconic_classifier(tmp_path / "iconic.pt")
    assert loaded_names == names
    x = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow
def test_mixed_images_are_their_class_positives_and_nobodys_negatives(tmp_path: Path) -> None:
    """Photos of people are mostly the foliage behind them: without `mixed`, the vegetation output would learn
    that foliage behind a person is not vegetation."""
    rng = np.random.default_rng(0)

    def flat(colour: tuple[int, int, int]) -> np.ndarray:
        return noisy_colour(rng, colour, 10)

    green, grey, red = (40, 160, 40), (128, 128, 128), (220, 20, 60)
    people = []
    for _ in range(8):
        image = flat(green)
        image[14:34, 18:30] = red  # a person in front of a hedge
        people.append(image)
    write_iconic(
        tmp_path,
        {"road": [flat(grey) for _ in range(8)], "vegetation": [flat(green) for _ in range(8)], "person": people},
    )
    names = ("road", "vegetation", "person")
    person_crop = torch.from_numpy(people[0][4:44, 4:44]).permute(2, 0, 1)[None].float()
    hedge = torch.from_numpy(flat(green)[4:44, 4:44]).permute(2, 0, 1)[None].float()
    outputs = {}
    for mixed in ((), ("person",)):
        model, _ = train_iconic_classifier(tmp_path, names, epochs=20, lr=3e-3, seed=0, mixed=mixed, log=False)
        with torch.no_grad():
            outputs[mixed] = (model(_normalise(person_crop))[0], model(_normalise(hedge))[0])
    person_logits, hedge_logits = outputs[("person",)]
    assert person_logits[2] > hedge_logits[2] + 5  # the person output still tells the person from the hedge
    assert person_logits[1] > 0  # the hedge behind the person is vegetation...
    assert person_logits[1] > outputs[()][0][1] + 5  # ...far more surely than when the image was a negative


def test_mixed_classes_must_be_classifier_classes_and_leave_negatives(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "d", clips=1, frames=1)
    with pytest.raises(ValueError, match=r"mixed classes \['tree'\] are not among"):
        train_iconic_classifier(tmp_path / "d/iconic", ("road", "sky"), epochs=1, mixed=("tree",), log=False)
    with pytest.raises(ValueError, match=r"no negative images for \['road', 'sky'\]"):
        train_iconic_classifier(tmp_path / "d/iconic", ("road", "sky"), epochs=1, mixed=("road", "sky"), log=False)


def test_a_classifier_file_without_its_architecture_is_refused(tmp_path: Path) -> None:
    model = tiny_iconic(2)
    torch.save({"class_names": ["road", "sky"], "state_dict": model.state_dict()}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"not a `wsvs-train classifiers` file \(no \['blocks', 'hidden'\]\)"):
        load_iconic_classifier(tmp_path / "old.pt")


def test_heatmaps_are_cached_per_frame_and_give_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=3)
    model, _ = train_iconic_classifier(tmp_path / "d/iconic", DRIVE.names, epochs=1, seed=0, log=False)
    save_iconic_classifier(tmp_path / "iconic.pt", model, DRIVE.names, {})
    spec = tiny_spec()
    source = heatmap_source(DRIVE, iconic_path=tmp_path / "iconic.pt")
    cache = HeatmapCache(tmp_path / "cache", source, spec, files=[tmp_path / "iconic.pt", None])
    [clip] = synth_clips(tmp_path / "d", "train")
    maps = cache.clip_heatmaps(clip, [1, 2])
    assert maps[2].shape == (len(DRIVE), 4, 8) and maps[2].dtype == torch.float16

    fresh = HeatmapCache(tmp_path / "cache", source, spec, files=[tmp_path / "iconic.pt", None])
    monkeypatch.setattr(source, "iconic", None)  # a recomputation would now fail
    torch.testing.assert_close(fresh.clip_heatmaps(clip, [2])[2], maps[2])
    masks = binary_masks(maps[2][None].float())
    positive = maps[2].float().amax(dim=(1, 2)) > 0
    assert torch.equal(masks.any(dim=(2, 3))[0], positive)  # a class the classifier finds somewhere gets a mask
    assert positive.any()


def test_a_clip_of_the_same_name_from_other_frames_gets_its_own_heatmaps(tmp_path: Path) -> None:
    write_tiny_drives(tmp_path / "a", clips=2, frames=2, seed=0)
    write_tiny_drives(tmp_path / "b", clips=2, frames=2, seed=1)
    model, _ = train_iconic_classifier(tmp_path / "a/iconic", DRIVE.names, epochs=1, seed=0, log=False)
    source = HeatmapSource(DRIVE, (fully_convolutional(model), DRIVE.names))
    [clip_a], [clip_b] = synth_clips(tmp_path / "a", "train"), synth_clips(tmp_path / "b", "train")
    assert clip_a.name == clip_b.name
    maps_a = HeatmapCache(tmp_path / "cache", source, tiny_spec(), files=[None]).clip_heatmaps(clip_a, [1])[1]
    maps_b = HeatmapCache(tmp_path / "cache", source, tiny_spec(), files=[None]).clip_heatmaps(clip_b, [1])[1]
    assert not torch.equal(maps_a, maps_b)


def test_several_heatmap_scales_average_their_heatmaps_and_have_their_own_cache(tmp_path: Path) -> None:
    torch.manual_seed(0)
    fcn = fully_convolutional(tiny_iconic(len(DRIVE)))
    frame = torch.rand(1, 3, 64, 128) * 255
    one, two = (HeatmapSource(DRIVE, (fcn, DRIVE.names), scale=s) for s in (1.0, 2.0))
    both = HeatmapSource(DRIVE, (fcn, DRIVE.names), scale=(1.0, 2.0))
    torch.testing.assert_close(both(frame), (one(frame) + two(frame)) / 2)
    dirs = {HeatmapCache(tmp_path, source, tiny_spec(), files=[None]).dir.name for source in (one, two, both)}
    assert {d.rsplit("-", 1)[1] for d in dirs} == {"s1", "s2", "s1+2"}  # one scale keeps its old cache folder
    with pytest.raises(ValueError, match=r"heatmap_scale=\(\) must be a number or a non-empty list"):
        HeatmapSource(DRIVE, (fcn, DRIVE.names), scale=())


def test_two_runs_sharing_the_cache_can_write_the_same_heatmaps_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_drives(tmp_path / "d", clips=2, frames=2)
    [clip] = synth_clips(tmp_path / "d", "train")
    torch.manual_seed(0)
    iconic = tiny_iconic(len(DRIVE))
    source = HeatmapSource(DRIVE, (fully_convolutional(iconic), DRIVE.names))
    mine, theirs = (HeatmapCache(tmp_path / "cache", source, tiny_spec(), files=[None]) for _ in range(2))
    interleaved = write_during_first_save(monkeypatch, lambda: theirs.clip_heatmaps(clip, [1])[1])
    maps = mine.clip_heatmaps(clip, [1])[1]
    torch.testing.assert_close(interleaved[0], maps)
    assert [p.name for p in mine.dir.iterdir()] == [f"{clip.name}.pt"]  # no temporary file left behind


def test_heatmap_scale_resizes_the_frame_not_the_heatmap() -> None:
    torch.manual_seed(0)
    iconic = tiny_iconic(len(DRIVE))
    frame = torch.rand(1, 3, 64, 128) * 255
    plain = HeatmapSource(DRIVE, (fully_convolutional(iconic), DRIVE.names))
    upscaled = HeatmapSource(DRIVE, (fully_convolutional(iconic), DRIVE.names), scale=2.0)
    assert plain(frame).shape == upscaled(frame).shape == (1, len(DRIVE), 8, 16)
    assert not torch.allclose(plain(frame), upscaled(frame))
    with pytest.raises(ValueError, match="heatmap_scale=8"):
        HeatmapSource(DRIVE, (fully_convolutional(iconic), DRIVE.names), scale=8.0)


def test_iconic_augmentation_keeps_size_and_range_and_is_seeded() -> None:
    images = torch.randint(0, 256, (5, 3, 48, 48), dtype=torch.uint8)
    first = augment_iconic(images, torch.Generator().manual_seed(3))
    assert first.shape == (5, 3, 40, 40) and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 255
    torch.testing.assert_close(augment_iconic(images, torch.Generator().manual_seed(3)), first)
    # colour changes are drawn per image: the same image twice in a batch comes out different
    twice = augment_iconic(images[:1].expand(2, -1, -1, -1), torch.Generator().manual_seed(4))
    assert not torch.allclose(twice[0], twice[1])


def test_wsvs_train_classifiers_writes_a_loadable_file(tmp_path: Path) -> None:
    from wsvs_training.cli import main

    write_tiny_drives(tmp_path / "d", clips=1, frames=1)
    out = tmp_path / "iconic.pt"
    iconic = str(tmp_path / "d/iconic")
    assert main(["classifiers", "--iconic", iconic, "--out", str(out), "--epochs", "1", "--mixed", "pole"]) == 0
    _, names = load_iconic_classifier(out)
    assert names == DRIVE.names
    info = torch.load(out, weights_only=True)["info"]
    assert info["command"].startswith("wsvs-train classifiers") and info["mixed"] == ["pole"]
