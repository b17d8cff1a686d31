"""The learning memory: pure torch, no Ray, no network, no files — bytes in, bytes out. (The
MiniLM encoder, on ONNX Runtime, keeps one exported model file in a cache directory.)

Names are loaded lazily, so importing `memory` costs nothing until a name is used (torch loads
only where a memory or an encoder is actually built).
"""

from importlib import import_module

__all__ = ["MemoryConfig", "NeuralMemory", "Encoder", "HashEncoder", "get_encoder", "check_encoder_name",
           "use_cache_dir",
           "IncompatibleState", "InvalidInput", "TTTLinear", "TTTMLP"]

_HOMES = {"MemoryConfig": "memory.config", "NeuralMemory": "memory.neural_memory",
          "Encoder": "memory.encoders", "HashEncoder": "memory.encoders",
          "get_encoder": "memory.encoders", "check_encoder_name": "memory.encoders",
          "use_cache_dir": "memory.encoder_export",
          "IncompatibleState": "memory.errors",
          "InvalidInput": "memory.errors", "TTTLinear": "memory.ttt", "TTTMLP": "memory.ttt"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'memory' has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
