"""Stable Diffusion sampling through diffusers' Flax pipeline (paper 000's SD v1.5 arm).

`pipeline.load_pipeline` / `pipeline.sample_images` are the public entry points;
`tiny.build_tiny_pipeline` writes a tiny random pipeline folder for tests and benches.
"""
