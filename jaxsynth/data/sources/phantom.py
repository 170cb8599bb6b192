"""`phantom`: the built-in simulated H&E tiles (`jaxsynth.data.phantom`) as a source."""

from __future__ import annotations

from collections.abc import Mapping

from jaxsynth.data.types import ImageSource
from jaxsynth.errors import UserError


def open_phantom(opts: Mapping) -> ImageSource:
    from jaxsynth.data.phantom import PhantomSource  # lazy: only phantom users pay for it

    kwargs = {}
    for key, arg, cast in (
        ("phantom.num_per_class", "num_per_class", int),
        ("phantom.difficulty", "difficulty", float),
        ("image_size", "image_size", int),
        ("seed", "seed", int),
    ):
        if opts.get(key) is not None:
            try:
                kwargs[arg] = cast(opts[key])
            except (TypeError, ValueError):
                raise UserError(f"{key}: expected {cast.__name__}, got {opts[key]!r}") from None
    try:
        return PhantomSource(**kwargs)
    except ValueError as e:
        raise UserError(f"phantom: {e}") from None
