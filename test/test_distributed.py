"""`wsvs-train fit` under torchrun: 2 CPU processes (gloo) train what one process trains on the doubled batch, and a
run whose rank is killed mid-way is restarted by torchrun (--max-restarts) and ends where an uninterrupted run ends.

The runs use batch norm (`batch_norm: true`), so the global-batch statistics (`GlobalBatchNorm2d`) and dropout masks
(`GlobalBatchDropout`) are part of what is compared, and heatmaps, so the caches are filled by both ranks. They use
SGD: with Adam, the biases of the convolutions before a batch norm (whose true gradient is 0, the norm subtracts
them) take steps of about lr in the direction of their gradients' rounding noise, which differs between the runs.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from weak_fixtures import write_tiny_drives

from wsvs_ros.labels import DRIVE
from wsvs_ros.model.checkpoint import load_checkpoint
from wsvs_training.distributed import GlobalBatchDropout, World, rank_device, rank_share, world_from_env
from wsvs_training.heatmaps import save_iconic_classifier, train_iconic_classifier
from wsvs_training.train import config_from_dict, fit

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tiny_drives(tmp_path_factory.mktemp("drives"), clips=3, frames=5)  # 2 training clips, 1 per rank
    model, info = train_iconic_classifier(root / "iconic", DRIVE.names, epochs=1, seed=0, log=False)
    save_iconic_classifier(root / "iconic.pt", model, DRIVE.names, info)
    return root


def tiny_config(drives: Path, out: Path, **kw: object) -> dict[str, object]:
    defaults = dict(
        data=str(drives), out=str(out), cache=str(drives / "cache"), iconic=str(drives / "iconic.pt"),
        input_width=64, input_height=32, flow_length=2, width=1 / 32, flow_method="opencv", iterations=4,
        batch_size=2, crf_stride=4, checkpoint_every=2, log_every=1, threads=1, seed=1, output_stride=8,
        batch_norm=True, optimizer="paper", lr=0.01,
    )  # fmt: skip
    return {**defaults, **kw}


def torchrun(config: dict[str, object], *, max_restarts: int = 0, kill: str | None = None) -> str:
    """`torchrun --standalone --nproc_per_node=2 ... fit CONFIG` on the loopback; returns its output."""
    path = Path(str(config["out"])).with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "GLOO_SOCKET_IFNAME": "lo",  # gloo's connections stay on the loopback, like --standalone's rendezvous
        "OMP_NUM_THREADS": "1",
    }
    env.pop("WSVS_TEST_KILL", None)
    if kill is not None:
        env["WSVS_TEST_KILL"] = kill
    if max_restarts > 0:  # restarted workers must not meet the last attempt's keys (docs/distributed.md)
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               f"--max-restarts={max_restarts}", "--monitor-interval=0.2", str(WORKER), "fit", str(path)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="module")
def two_processes(drives: Path) -> tuple[Path, str]:
    """An uninterrupted 2-process run (which fills the shared cache): its out folder and torchrun's output."""
    out = drives / "two"
    return out, torchrun(tiny_config(drives, out))


def _state_model(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "train_state.pt", weights_only=True)["model"]


def _log_rows(out: Path) -> list[dict[str, str]]:
    with (out / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_two_processes_train_what_one_process_trains_on_the_doubled_batch(
    drives: Path, two_processes: tuple[Path, str]
) -> None:
    out, output = two_processes
    assert "training on 2 process(es) x batch_size 2 = effective batch 4 frames per step" in output
    assert output.count("wrote ") == 1  # rank 0 alone writes and says so
    heatmaps = list((drives / "cache").glob("heatmaps-*/*.pt"))
    assert len(heatmaps) == 2 and len(list((drives / "cache/flow").glob("*/*.pt"))) == 2  # one rank's clip each
    mtimes = [p.stat().st_mtime_ns for p in heatmaps]

    one = drives / "one"
    fit(config_from_dict(tiny_config(drives, one, batch_size=4)), command="t", progress=False)
    assert [p.stat().st_mtime_ns for p in heatmaps] == mtimes  # the one process read the caches the ranks wrote

    two_state, one_state = _state_model(out), _state_model(one)
    assert two_state.keys() == one_state.keys()
    for key in two_state:  # the weights and the batch-norm running statistics
        torch.testing.assert_close(two_state[key], one_state[key], rtol=1e-4, atol=1e-6, msg=key)
    one_folded = load_checkpoint(one / "last.pt").model.state_dict()
    for key, value in load_checkpoint(out / "last.pt").model.state_dict().items():  # the folded checkpoint too
        torch.testing.assert_close(value, one_folded[key], rtol=1e-4, atol=1e-6, msg=key)
    assert load_checkpoint(out / "last.pt").info["effective_batch"] == 4
    two_log, one_log = _log_rows(out), _log_rows(one)
    assert [r["iteration"] for r in two_log] == ["1", "2", "3", "4"]  # one writer, one row per iteration
    for a, b in zip(two_log, one_log, strict=True):  # losses are means over the global batch
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), abs=1e-4)


def test_a_killed_rank_is_restarted_by_torchrun_and_the_run_ends_as_an_uninterrupted_one(
    drives: Path, two_processes: tuple[Path, str]
) -> None:
    out = drives / "killed"
    # Rank 0, the writer, dies as iteration 3 starts: the last training state is that of iteration 2.
    output = torchrun(tiny_config(drives, out), max_restarts=1, kill="0:3")
    assert "test: killing rank 0 at iteration 3" in output  # and torchrun restarted both workers, which finished
    straight = _state_model(two_processes[0])
    for key, value in _state_model(out).items():
        # Bit-exact: same ranks, same order of every sum (with 2 ranks an all-reduce is one addition, a + b).
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0, msg=key)
    assert [r["iteration"] for r in _log_rows(out)] == ["1", "2", "3", "4"]


def test_resuming_with_another_effective_batch_is_refused(drives: Path) -> None:
    out = drives / "resume"
    fit(config_from_dict(tiny_config(drives, out, iterations=1)), command="t", progress=False)
    with pytest.raises(ValueError, match="effective batch of 2 frames per step, this run has 1 process"):
        fit(config_from_dict(tiny_config(drives, out, iterations=2, batch_size=4)), command="t", progress=False)


def test_one_process_draws_the_dropout_masks_of_torch() -> None:
    x = torch.randn(3, 8, 4, 5)
    torch.manual_seed(7)
    expected = nn.Dropout(0.5).train()(x)
    torch.manual_seed(7)
    torch.testing.assert_close(GlobalBatchDropout(0.5, World()).train()(x), expected, rtol=0, atol=0)


def test_each_rank_drops_its_rows_of_the_global_batch_mask() -> None:
    x = torch.ones(4, 3, 2, 2)
    torch.manual_seed(7)
    whole = GlobalBatchDropout(0.5, World())(x)
    for rank in (0, 1):
        torch.manual_seed(7)
        part = GlobalBatchDropout(0.5, World(rank=rank, size=2))(x[:2])
        torch.testing.assert_close(part, whole[2 * rank : 2 * rank + 2], rtol=0, atol=0)


def test_rank_shares_concatenate_to_the_whole() -> None:
    items = list(range(7))
    shares = [rank_share(items, World(rank=r, size=3)) for r in range(3)]
    assert [i for share in shares for i in share] == items and sorted(len(s) for s in shares) == [2, 2, 3]


def test_world_comes_from_torchruns_environment() -> None:
    assert world_from_env({}) == World()
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(rank=3, size=4, local_rank=1)
    with pytest.raises(ValueError, match="RANK=4, WORLD_SIZE=4"):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_several_processes_may_not_pin_one_gpu() -> None:
    with pytest.raises(ValueError, match="device=cuda:1 pins one GPU, but torchrun started 2 processes"):
        rank_device("cuda:1", World(rank=0, size=2))


def test_mixed_precision_on_the_cpu_is_refused_with_the_fix(drives: Path) -> None:
    with pytest.raises(ValueError, match="precision=bf16 runs on CUDA only .device=cpu.; set precision: fp32"):
        config_from_dict(tiny_config(drives, drives / "x", precision="bf16"))
    with pytest.raises(ValueError, match="precision='fp8': use one of"):
        config_from_dict(tiny_config(drives, drives / "x", precision="fp8", device="cuda"))
