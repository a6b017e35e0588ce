"""Deployment: the shift-add cost model, integer emulation, packed files and ONNX export and runtime."""
