"""Dense optical flow: backends called as `flow = backend(prev, cur)` and the rolling `FlowWindow`."""

from __future__ import annotations

from wsvs_ros.flow.opencv_flow import OpenCVFlow
from wsvs_ros.flow.torch_flow import TorchFlow
from wsvs_ros.flow.window import FlowWindow, WindowSample
from wsvs_ros.spec import ModelSpec

BACKENDS = {"torch": TorchFlow, "opencv": OpenCVFlow}


def make_flow(spec: ModelSpec, *, compile: bool = False) -> TorchFlow | OpenCVFlow:
    """The flow backend a model was trained with, with its parameters.

    Args:
        compile: run the torch flow through `torch.compile` (`TorchFlow`'s `compile`); how it runs, so not part
            of the model's `flow_params`.
    Raises:
        ValueError: `flow_params` holds an argument the backend does not take, or `compile` is asked of a backend
            other than "torch".
    """
    backend = BACKENDS[spec.flow_method]
    if compile and backend is not TorchFlow:
        raise ValueError(f"compile applies to the 'torch' flow backend only, not {spec.flow_method!r}")
    try:
        return TorchFlow(**spec.flow_params, compile=True) if compile else backend(**spec.flow_params)
    except TypeError as e:
        raise ValueError(f"flow_params {spec.flow_params} do not fit the {spec.flow_method!r} flow backend: {e}") from e


__all__ = ["BACKENDS", "FlowWindow", "OpenCVFlow", "TorchFlow", "WindowSample", "make_flow"]
