"""ROS message formats without rclpy: image messages <-> numpy (`conversions`), what one segmented frame publishes
(`outputs`) and reading camera frames from recorded bags (`bag_reader`, with rosbags). They work on rclpy's message
classes and on rosbags' alike, so the live node and offline replay share them."""
