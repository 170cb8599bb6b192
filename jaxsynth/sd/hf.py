"""Hugging Face (diffusers / transformers) plumbing every SD path shares: the extra check and
quiet logging. A leaf module, so the weight loader and the pipeline can both use it.
"""

from __future__ import annotations

from jaxsynth.errors import require_extra


def quiet_hf_logging() -> None:
    """Silence diffusers/transformers per-module deprecation and safety-checker notices (every
    path that loads a pipeline starts here, so it also checks the 'sd' extra is installed)."""
    require_extra("sd", "Stable Diffusion")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
