"""The ablation: four setups on the same clips, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from weak_fixtures import write_tiny_drives

from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import load_checkpoint
from wsvs_training.ablation import SETUPS, run_ablation, setup_config
from wsvs_training.heatmaps import save_iconic_classifier, train_iconic_classifier
from wsvs_training.train import config_from_dict


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    root = write_tiny_drives(tmp_path_factory.mktemp("drives"), clips=2, frames=5)
    model, info = train_iconic_classifier(root / "iconic", DRIVE.names, epochs=1, seed=0, log=False)
    save_iconic_classifier(root / "iconic.pt", model, DRIVE.names, info)
    return config_from_dict(
        dict(
            data=str(root),
            out=str(root / "unused"),
            cache=str(root / "cache"),
            iconic=str(root / "iconic.pt"),
            input_width=64,
            input_height=32,
            flow_length=2,
            width=1 / 32,
            flow_method="opencv",
            iterations=2,
            batch_size=1,
            crf_stride=4,
            checkpoint_every=2,
            log_every=1,
            threads=1,
        )
    )


def test_setups_differ_only_in_streams_and_heatmap_terms(base, tmp_path: Path) -> None:
    configs = {name: setup_config(base, name, tmp_path) for name in SETUPS}
    assert configs["No-Heatmap"].heatmap_weight == 0 and configs["No-Heatmap"].single_stream
    assert configs["Foreground-Heatmap"].heatmap_classes == ("car", "person", "pole")
    assert configs["Our-Heatmap"].single_stream and configs["Our-Heatmap"].heatmap_classes is None
    assert not configs["Two-Stream"].single_stream
    for config in configs.values():
        assert (config.iterations, config.seed, config.data, config.cache) == (2, 0, base.data, base.cache)
        assert config.out == str(tmp_path / next(n for n, c in configs.items() if c is config))


def test_ablation_trains_evaluates_and_tabulates_every_setup(base, tmp_path: Path) -> None:
    rows = run_ablation(base, tmp_path, command="wsvs-train ablation --out X", progress=False)
    assert [r["setup"] for r in rows] == list(SETUPS)
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["command"] == "wsvs-train ablation --out X"
    assert [r["setup"] for r in saved["rows"]] == list(SETUPS)
    for r in saved["rows"]:
        assert 0 <= r["miou"] <= 1 and 0 <= r["global_acc"] <= 1 and set(r["per_class_iou"]) == set(DRIVE.names)
    table = (tmp_path / "ablation.md").read_text()
    assert "| Setup | Mean IoU | Mean Class Acc. | Global Acc. |" in table
    assert all(f"| {name} |" in table for name in SETUPS)
    assert "wsvs-train ablation --out X" in table
    assert f"({base.preset().describe()})" in table  # how it was trained, learning-rate schedule included
    flow_conv = "flow_stream.convs.0.weight"
    single = load_checkpoint(tmp_path / "Our-Heatmap/last.pt").model.state_dict()[flow_conv]
    two = load_checkpoint(tmp_path / "Two-Stream/last.pt").model.state_dict()[flow_conv]
    assert torch.count_nonzero(single) == 0 and torch.count_nonzero(two) > 0


def test_setups_can_run_in_separate_processes_into_one_table(base, tmp_path: Path) -> None:
    run_ablation(base, tmp_path, command="a", setups=["Two-Stream"], progress=False)
    rows = run_ablation(base, tmp_path, command="b", setups=["No-Heatmap"], progress=False)
    assert [r["setup"] for r in rows] == ["No-Heatmap", "Two-Stream"]
    with pytest.raises(ValueError, match="unknown ablation setup"):
        run_ablation(base, tmp_path, command="c", setups=["Three-Stream"])
