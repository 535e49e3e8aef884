"""User-facing errors.

Anything a user can cause (a bad file, a missing engine, a wrong sample rate) is raised as `IdealError`
with the offending input named and what to do about it. The CLI prints it as one line and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class IdealError(Exception):
    """An error caused by the user's input, with a hint on how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(IdealError):
    """A file or argument the user passed is unusable (not a video, no face, no audio, ...)."""


class AvatarError(IdealError):
    """An avatar directory is missing files, corrupt, or from an incompatible format version."""


class BackendError(IdealError):
    """A backend cannot run here (missing engine, wrong GPU, library not installed)."""
