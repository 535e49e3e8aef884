"""`ideal bench`: throughput and latency of the avatar pipeline (offline, realtime, webrtc modes)."""
