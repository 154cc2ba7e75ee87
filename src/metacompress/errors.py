"""User-facing errors: the CLI prints these as one line and exits with status 2."""


class UserError(Exception):
    """A problem with what the user asked for or handed us (not a bug in metacompress).

    The message is folded onto one line, whatever a wrapped library's error text looked like.
    """

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


class DataError(UserError):
    """A dataset file or folder is missing, of the wrong format, or corrupt."""


class FormatError(UserError):
    """A compressed file is truncated, corrupt, of another version, or not ours."""
