"""Offline training of the two-stream network from video-level tags (imports wsvs_ros; never imported by it)."""
