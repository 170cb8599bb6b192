"""jaxsynth: synthetic histopathology images for rare tumour classes, in JAX/Flax."""

__version__ = "0.1.0"
