"""`ideal serve`: the avatar over WebRTC (aiortc + aiohttp).

One module per concept, as in aiortc: `config` (what the operator sets), `avatars` (the engines the server
holds), `tracks` (outgoing `MediaStreamTrack`s that own their timestamps), `broadcast` (one session's frames fanned
out to every subscriber), `peers` (peer connection lifecycle), `rooms`, `metrics`, `app` (HTTP routes) and
`cli`. `client` is a small Python WebRTC client used by tests and benchmarks.
"""
