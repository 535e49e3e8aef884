"""Exporting a trained avatar for accelerated inference, and the accelerated backends.

- `export.onnx_export`: one ONNX graph per stage (condition = encoders + EAA, mouth = audio-to-mouth model,
  field.<tier> = field + volume rendering, refine.<tier> = upsampler reusing the coarse pass), fixed frame
  size, dynamic batch, checked with the ONNX checker and against PyTorch.
- `export.tensorrt_build`: a TensorRT engine per graph, named by GPU and TensorRT version.
- `export.onnx_backend`, `export.tensorrt_backend`: the `avatar.backend.Backend` protocol on top of them.
- `export.backends.create_backend`: pick a backend by name or `auto`.

Importing this package (or any of its modules) never imports onnxruntime, tensorrt or CUDA: each backend
imports its library when it is created.
"""
