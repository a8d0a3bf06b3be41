"""The errors a run reports to the user in one line (no traceback by default).

Front ends turn these into their exit codes and messages by type, never by matching text.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "EmptyVideoError", "InputError"]


class InputError(ValueError):
    """An input the user gave cannot be used; the message says why, in one line."""


class EmptyVideoError(InputError):
    """The video (or the part of it asked for) has no frames."""


class CheckpointError(InputError):
    """A checkpoint that cannot be loaded: ``problem`` and ``advice`` in our words, one line;
    ``detail``: the underlying library's text."""

    def __init__(self, checkpoint: str, problem: str, advice: str = "", detail: str = ""):
        self.checkpoint, self.problem, self.advice, self.detail = str(checkpoint), problem, advice, detail
        super().__init__(f"checkpoint {self.checkpoint}: {problem}" + (f"; {advice}" if advice else ""))
