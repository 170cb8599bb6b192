"""Data: image sources (phantom and real datasets), study splits, Grain pipelines."""
