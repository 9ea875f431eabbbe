"""The one error type for bad input files."""


class InputError(Exception):
    """A bad input file: names the file and the reason.

    Args:
        path: the offending file (or folder).
        reason: what is wrong with it, in words.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return InputError, (self.path, self.reason)
