"""User-facing errors.

A `UserError` is something the user can fix (a bad path, a bad config key, an empty class). The
CLI prints it as a single line, `jaxsynth: error: <message>`, and exits with status 2, instead of
a traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by user input; its message is one line naming the file/field at fault."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
