"""Dense optical flow: backends called as `flow = backend(prev, cur)` and the rolling `FlowWindow`."""

from __future__ import annotations

from wsvs_ros.flow.opencv_flow import OpenCVFlow
from wsvs_ros.flow.torch_flow import TorchFlow
from wsvs_ros.flow.window import FlowWindow, WindowSample
from wsvs_ros.spec import ModelSpec

BACKENDS = {"torch": TorchFlow, "opencv": OpenCVFlow}


def make_flow(spec: ModelSpec) -> TorchFlow | OpenCVFlow:
    """The flow backend a model was trained with, with its parameters.

    Raises:
        ValueError: `flow_params` holds an argument the backend does not take.
    """
    backend = BACKENDS[spec.flow_method]
    try:
        return backend(**spec.flow_params)
    except TypeError as e:
        raise ValueError(f"flow_params {spec.flow_params} do not fit the {spec.flow_method!r} flow backend: {e}") from e


__all__ = ["BACKENDS", "FlowWindow", "OpenCVFlow", "TorchFlow", "WindowSample", "make_flow"]
