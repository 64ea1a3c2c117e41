"""The ROS 2 node (rclpy): `segment_node` (the node and its `main`), its typed configuration from ROS parameters
(`config`), the newest-frame-wins hand-over between the executor and inference (`frame_slot`) and `/diagnostics`
(`diagnostics`). Only `segment_node` imports rclpy; the rest is plain Python, tested without ROS."""
