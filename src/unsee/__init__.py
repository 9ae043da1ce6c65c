"""unsee: erase concepts from text-to-image diffusion models, and measure what else the erasure touched."""

__version__ = "0.1.0"
