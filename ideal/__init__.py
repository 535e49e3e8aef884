"""ideal-nerf: real-time talking-head avatars (IDEAL-NeRF).

One import namespace for the whole distribution. The repository keeps one top-level folder per stage, installed
under this package so nothing generic lands in site-packages:

    ideal.avatar    data preparation, the model, training, evaluation, dubbing   (repo folder avatar/)
    ideal.export    ONNX graphs, TensorRT engines, the render backends           (repo folder export/)
    ideal.streamer  live audio chunks -> frames                                  (repo folder streamer/)
    ideal.server    the aiortc WebRTC server                                     (repo folder server/)
    ideal.web       the browser client, served as package data                   (repo folder web/)
    ideal.bench     `ideal bench`
    ideal.cli       the one command line
    ideal.configcli every stage's CLI options, derived from its config dataclasses (stdlib only)

Data flows one way; a lower stage never imports a higher one (tests/test_architecture.py keeps it so).
"""

__version__ = "0.1.0"
