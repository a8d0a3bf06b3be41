"""The errors a run reports to the user in one line (no traceback by default).

Front ends turn these into their exit codes and messages by type, never by matching text.
"""

from __future__ import annotations

__all__ = ["EmptyVideoError", "InputError"]


class InputError(ValueError):
    """An input the user gave cannot be used; the message says why, in one line."""


class EmptyVideoError(InputError):
    """The video (or the part of it asked for) has no frames."""
