"""The learning memory: pure torch, no Ray, no network, no files — bytes in, bytes out."""

from memory.config import MemoryConfig
from memory.encoders import Encoder, HashEncoder, get_encoder
from memory.errors import IncompatibleState, InvalidInput
from memory.neural_memory import NeuralMemory

__all__ = ["MemoryConfig", "NeuralMemory", "Encoder", "HashEncoder", "get_encoder",
           "IncompatibleState", "InvalidInput"]
