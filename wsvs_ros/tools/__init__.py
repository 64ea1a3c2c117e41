"""The `wsvs` command line: `cli` (argument parsing), `replay` (a bag through the Segmenter into a masks bag,
overlays and stats; also `wsvs demo`) and `bench` (per-stage latency). Built on the core; nothing in the core or the
node imports them."""
