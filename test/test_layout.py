"""The package's rooms, read from the source (ast, nothing imported): no import cycle, and imports point one way.

The rooms are the ROS-free core (the modules at the top of `wsvs_ros` and its `flow`, `model` and `engine` packages),
`wsvs_ros.messages` (ROS message formats, no rclpy), `wsvs_ros.node` (the rclpy node), `wsvs_ros.tools` (the `wsvs`
command) and `training/` (offline, installed as `wsvs_training`, never imported by `wsvs_ros`). Lazy imports inside
functions count: a cycle that only closes at run time is still a cycle for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wsvs_ros": "wsvs_ros", "training": "wsvs_training"}  # folder -> installed name
EDGE_ROOMS = ("wsvs_ros.messages", "wsvs_ros.node", "wsvs_ros.tools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported_names(path: Path, name: str) -> set[str]:
    """Every absolute module name `path` imports (at any depth of the file), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = project_modules()
    return {
        name: {m for m in imported_names(path, name) if m in modules and m != name} for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in done and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def room(module: str) -> str:
    if module.startswith("wsvs_training"):
        return "training"
    return next((r for r in EDGE_ROOMS if module == r or module.startswith(r + ".")), "core")


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from wsvs_ros.tools import replay\n")
    assert "wsvs_ros.tools.replay" in imported_names(source, "wsvs_ros.engine.m")


def test_no_import_cycle_among_the_project_modules() -> None:
    graph = import_graph()
    assert len(graph) > 50, "the walk missed the packages"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("core", {"training", "wsvs_ros.node", "wsvs_ros.tools"}),
        ("wsvs_ros.messages", {"training", "wsvs_ros.node", "wsvs_ros.tools"}),
        ("wsvs_ros.node", {"training", "wsvs_ros.tools"}),
        ("wsvs_ros.tools", {"training", "wsvs_ros.node"}),
    ],
)
def test_imports_point_from_the_edges_to_the_core_and_never_into_training(importer: str, forbidden: set[str]) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if room(module) == importer
        for target in targets
        if room(target) in forbidden
    )
    assert not wrong


def test_only_the_node_imports_rclpy_and_the_core_imports_no_ros() -> None:
    ros = ("rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "builtin_interfaces", "rosbags")
    modules = project_modules()
    users = {
        name: sorted(m for m in imported_names(path, name) if m.split(".")[0] in ros)
        for name, path in modules.items()
        if room(name) != "training"
    }
    rclpy_users = sorted(name for name, found in users.items() if any(m.startswith("rclpy") for m in found))
    assert rclpy_users == ["wsvs_ros.node.segment_node"]
    core_ros = sorted(name for name, found in users.items() if found and room(name) == "core")
    assert not core_ros, f"the core imports ROS packages: {core_ros}"
