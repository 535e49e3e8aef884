"""`ideal serve`: the avatar over WebRTC (aiortc + aiohttp).

One module per concept, as in aiortc: `config` (what the operator sets), `avatars` (the engines the server
holds), `tracks` (outgoing `MediaStreamTrack`s that own their timestamps), `broadcast` (one session's frames fanned
out to every subscriber), `peers` (peer connection lifecycle and the session policy), `rooms`, `metrics`, `app`
(HTTP routes and the one error contract), `http_policy` (Origin and Host checks, security headers),
`connections` (connection limit and timeouts), `ratelimit` (offers per client), `credentials` (secrets, TURN
credentials) and `cli`. `client` is a small Python WebRTC client used by tests and benchmarks.
"""
