"""Exceptions with messages meant for the user: one line that says what is wrong and what to do."""


class CTMRError(Exception):
    """Base class of every error this library reports to the user."""


class InputError(CTMRError):
    """A file or node given as input cannot be used (missing, unreadable, 2-D, empty)."""


class OutputError(CTMRError):
    """An output could not be written (disk full, permission lost); nothing partial is left at its path."""


class NoOverlapError(CTMRError):
    """The fixed and moving images do not share a region that registration could align.

    `search`: when registration started from a pose search's winner, that search's details (its
    `alternatives` may still lead to an overlap); `swapped`: whether the search ran with fixed and moving
    swapped (its matrices are then moving->fixed)."""

    search: dict | None = None
    swapped: bool = False


class Cancelled(CTMRError):
    """The user cancelled the registration."""


class RegistrationError(CTMRError):
    """The registration engine failed; the message carries the cause and the tail of its log."""
