"""Launch the wsvs_segmenter node (ROS 2 Humble and Jazzy), optionally replaying a bag into it.

    ros2 launch wsvs_ros segment.launch.py camera_topic:=/camera/image_raw model:=/path/model.pt
    ros2 launch wsvs_ros segment.launch.py model:=/path/model.pt bag:=drive_log/     # sim time from the bag
    ros2 launch wsvs_ros segment.launch.py params_file:=/path/my_segment.yaml namespace:=front

Every node parameter lives in params_file (default: share/wsvs_ros/config/segment.yaml, which documents them).
camera_topic, compressed, model, backend and device override it only when given: left empty, params_file's value
stands. With bag set, `ros2 bag play <bag> --clock` starts once the node logs that it is ready (after its model has
warmed up, so no frame is lost to start-up), and use_sim_time is forced true.

Stop it with SIGINT (Ctrl-C, `docker stop --signal SIGINT`, systemd `KillSignal=SIGINT`): launch forwards it and the
node shuts down cleanly. SIGTERM to the launch process alone ends launch and leaves the node running (launch's own
handler does not signal its children, whatever the description says); a supervisor that sends SIGTERM must send it
to the whole process group (systemd's default KillMode=control-group does), and the node then ends cleanly itself.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessIO
from launch.events.process import ProcessIO
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# The line the node (wsvs_ros.node.segment_node) logs once subscribed (wsvs_ros.node.config.READY_MESSAGE; imported
# there, not here, so that launching does not load PyTorch into the launch process).
READY_MESSAGE = "ready: segmenting"

# Launch arguments that override the parameter of the same name when not empty.
STRING_OVERRIDES = ("camera_topic", "model", "backend", "device")
BOOL_OVERRIDES = ("compressed",)


def generate_launch_description() -> LaunchDescription:
    from_params = "empty: params_file's value"
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "camera_topic", default_value="", description=f"Image topic to segment ({from_params})"
            ),
            DeclareLaunchArgument(
                "compressed",
                default_value="",
                description=f"true: subscribe to <camera_topic>/compressed ({from_params})",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description=f"Model file, .pt or .onnx ({from_params}, by default the package's model)",
            ),
            DeclareLaunchArgument(
                "backend", default_value="", description=f"torch, onnxruntime or tensorrt ({from_params})"
            ),
            DeclareLaunchArgument("device", default_value="", description=f"cpu, cuda or cuda:N ({from_params})"),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([FindPackageShare("wsvs_ros"), "config", "segment.yaml"]),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
            DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock for ROS time"),
            DeclareLaunchArgument(
                "bag",
                default_value="",
                description="A bag to replay with `ros2 bag play --clock` (forces use_sim_time)",
            ),
            OpaqueFunction(function=_launch_setup),
        ]
    )


def _launch_setup(context: LaunchContext) -> list:
    """The node (and the bag player), built once the launch arguments' values are known."""

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides: dict[str, str | bool] = {name: arg(name) for name in STRING_OVERRIDES if arg(name)}
    overrides |= {name: _as_bool(name, arg(name)) for name in BOOL_OVERRIDES if arg(name)}
    bag = arg("bag")
    # A replayed bag publishes /clock; stamps in it are the bag's, so the node must use them for its ROS time.
    overrides["use_sim_time"] = True if bag else _as_bool("use_sim_time", arg("use_sim_time"))

    node = Node(
        package="wsvs_ros",
        executable="segment_node",
        namespace=arg("namespace") or None,
        parameters=[arg("params_file"), overrides],
        output="screen",
    )
    if not bag:
        return [node]

    # `--clock` takes an optional rate, so the bag goes before it: `--clock <bag>` would read the bag as the rate.
    player = ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--clock"], output="screen")
    started = False

    def start_player_when_ready(event: ProcessIO) -> list | None:
        nonlocal started
        if started or READY_MESSAGE not in event.text.decode(errors="replace"):
            return None
        started = True
        return [player]

    ready = OnProcessIO(target_action=node, on_stdout=start_player_when_ready, on_stderr=start_player_when_ready)
    return [node, RegisterEventHandler(ready)]


def _as_bool(name: str, value: str) -> bool:
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")
