"""The one exception type users see. The CLI prints it on one line and exits 2."""


class OnnxoptError(Exception):
    """A problem the user can fix. `message` says what is wrong, `hint` what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
