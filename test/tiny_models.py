"""Tiny model specs for tests, importable both under pytest and where `launch_test` runs a test file as a module
(which puts no conftest on the import path)."""

from __future__ import annotations

from wsvs_ros.labels import DRIVE
from wsvs_ros.spec import ModelSpec


def tiny_spec(**kw) -> ModelSpec:
    """A 64x32-input, 1/32-width model spec (opencv flow: fast and exact enough for plumbing tests)."""
    defaults = dict(input_width=64, input_height=32, flow_length=4, width=1 / 32, flow_method="opencv")
    return ModelSpec(DRIVE.name, DRIVE.names, **{**defaults, **kw})
