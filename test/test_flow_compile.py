"""TorchFlow(compile=True): the warp step fused by torch.compile gives the eager flow, builds its graph once, and
falls back to eager with a logged reason where it cannot compile.

Building a graph is slow (inductor generates and compiles C++: 30 s with a warm inductor cache, about 4 minutes cold
on 2 busy cores), so the tests that compile share one parameter set, whose graph a module fixture builds once; the
graph's sizes are dynamic, so every frame size shares it too.
"""

from __future__ import annotations

import logging

import pytest
import torch
from test_flow_backends import MARGIN, endpoint_error, frame_pair, textured_image

from wsvs_ros.flow import make_flow, torch_flow
from wsvs_ros.flow.torch_flow import TorchFlow
from wsvs_ros.labels import DRIVE
from wsvs_ros.spec import ModelSpec

# Few iterations keep the graph small; warps run outside the graph, so they do not change it.
PARAMS = {"warps": 2, "iterations": 2}


@pytest.fixture(scope="module")
def compiled() -> TorchFlow:
    flow = TorchFlow(**PARAMS, compile=True)
    prev, cur, _ = frame_pair("zoom")
    flow(prev, cur)  # builds the graph
    return flow


@pytest.mark.slow
def test_compiled_flow_builds_one_graph_without_graph_breaks(compiled: TorchFlow) -> None:
    # fullgraph=True makes a graph break an error, which would have sent the flow back to eager.
    assert compiled.compile_error is None
    assert compiled.compilations == 1
    assert compiled.compile_seconds > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["translation", "zoom", "rotation"])
def test_compiled_flow_equals_the_eager_flow_on_known_motions(compiled: TorchFlow, kind: str) -> None:
    prev, cur, truth = frame_pair(kind)
    eager, fused = TorchFlow(**PARAMS)(prev, cur), compiled(prev, cur)
    assert (fused - eager)[..., MARGIN:-MARGIN, MARGIN:-MARGIN].abs().mean() < 1e-4
    assert endpoint_error(fused, truth) == pytest.approx(endpoint_error(eager, truth), abs=1e-4)


@pytest.mark.slow
def test_compiled_flow_differs_from_eager_on_driving_frames_by_less_than_float32_rounding(compiled: TorchFlow) -> None:
    from test_flow_backends import _footage_frames

    prev, cur = _footage_frames(2)  # real 512x256 frames; skips where the footage is not installed
    eager = TorchFlow(**PARAMS)
    reference = eager(prev, cur)
    # Real texture makes the flow more sensitive to rounding than the synthetic pairs: on seq0000's frames 10-11,
    # float32 against float64 eager differs by 4.3e-4 px and compiled against eager by 2.6e-4 px.
    rounding = (eager(prev.double(), cur.double()) - reference).abs().mean()
    assert (compiled(prev, cur) - reference).abs().mean() <= rounding


@pytest.mark.slow
def test_a_new_frame_size_compiles_at_most_once_and_later_frames_not_at_all(compiled: TorchFlow) -> None:
    before = compiled.compilations
    for seed in range(3):
        frame = textured_image(40, 72, seed=seed)
        compiled(frame, frame.roll(2, dims=-1))
        if seed == 0:
            after_change = compiled.compilations
    assert after_change - before <= 1  # the sizes are symbols of the graph: normally no recompilation at all
    assert compiled.compilations == after_change


@pytest.mark.slow  # dynamo still traces the warp: about 40 s on 2 busy cores
def test_a_failed_compilation_falls_back_to_the_eager_flow_and_logs_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The backend fails as inductor does on a machine without a C++ compiler (or, on CUDA, without Triton). Own
    # parameters (no median filter) and one iteration keep the trace short and unlike any graph already built.
    message = "Failed to find C++ compiler. Please specify via CXX environment variable."

    def no_compiler(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> None:
        raise RuntimeError(message)

    failing = torch.compile(torch_flow.tvl1_warp_functional, fullgraph=True, backend=no_compiler)
    monkeypatch.setattr(torch_flow, "_compiled", failing)
    params = {"warps": 1, "iterations": 1, "median_filter": False}
    prev, cur, _ = frame_pair("translation", 32, 48)
    flow = TorchFlow(**params, compile=True)
    with caplog.at_level(logging.WARNING, logger="wsvs_ros.flow.torch_flow"):
        result = flow(prev, cur)
        flow(prev, cur)  # stays eager without trying again
    assert torch.equal(result, TorchFlow(**params)(prev, cur))
    assert (
        flow.compile_error == "RuntimeError: Failed to find C++ compiler. Please specify via CXX environment variable."
    )
    assert flow.compilations == 0
    assert [r.message for r in caplog.records] == [
        f"TorchFlow: torch.compile unavailable, running eagerly: {flow.compile_error}"
    ]


def test_where_torch_compile_refuses_outright_the_flow_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise RuntimeError("torch.compile is not supported on Python 3.14+")

    monkeypatch.setattr(torch_flow, "_compiled_warp", refuse)
    prev, cur, _ = frame_pair("translation", 32, 48)
    flow = TorchFlow(warps=1, iterations=1, compile=True)
    assert torch.equal(flow(prev, cur), TorchFlow(warps=1, iterations=1)(prev, cur))
    assert flow.compile_error == "RuntimeError: torch.compile is not supported on Python 3.14+"


@pytest.mark.parametrize("compile_", [False, True])
def test_compile_is_not_a_flow_parameter_a_model_records(compile_: bool) -> None:
    assert TorchFlow(compile=compile_).params == TorchFlow().params


def test_make_flow_refuses_compile_for_the_opencv_backend() -> None:
    with pytest.raises(ValueError, match="'torch' flow backend only"):
        make_flow(ModelSpec(DRIVE.name, DRIVE.names, flow_method="opencv"), compile=True)
    assert make_flow(ModelSpec(DRIVE.name, DRIVE.names), compile=True).compile
