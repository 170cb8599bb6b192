"""User-facing errors.

A `UserError` is something the user can fix (a bad path, a bad config key, an empty class). The
CLI prints it as a single line, `jaxsynth: error: <message>`, and exits with status 2, instead of
a traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by user input; its message is one line naming the file/field at fault."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# Optional dependency groups (pyproject's extras): the import that proves each is installed.
EXTRAS = {
    "sd": ("diffusers", "transformers"),
    "reader-study": ("flask",),
    "tfds": ("tensorflow_datasets",),
}


def require_extra(extra: str, what: str) -> None:
    """Raise a one-line `UserError` naming the pip extra when `what` needs one not installed."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install 'jaxsynth[{extra}]'"
        )
