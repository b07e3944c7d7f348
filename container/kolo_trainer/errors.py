"""kolo's error tree. Light (stdlib only): the host CLI imports it too.

Every error a user can cause is a :class:`KoloError`. The entry points (``kolo`` on the host, ``python -m
kolo_trainer`` in the container) catch it once, print the message and the hint on one or two lines, and exit with
``exit_code``. A traceback appears only with ``--debug``.
"""

from __future__ import annotations


class KoloError(Exception):
    """A problem the user can fix. ``hint`` names the command or action that fixes it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class OptionsError(KoloError):
    """One or more invalid options / config keys. All problems are collected and reported together."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = list(problems)
        n = len(self.problems)
        head = "invalid option" if n == 1 else f"{n} problems with the options"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems), hint)


class DataError(KoloError):
    """The training data is unusable. ``problems`` are ``file:line: reason`` strings."""

    exit_code = 3

    def __init__(self, problems: list[str], hint: str | None = None, head: str | None = None):
        self.problems = list(problems)
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        lines = [f"  {p}" for p in shown] + ([f"  ... and {more} more"] if more > 0 else [])
        super().__init__((head or f"{len(self.problems)} problem(s) in the data") + ":\n" + "\n".join(lines), hint)


class NameError_(KoloError):
    """A file or folder name that is not a plain name inside the data root."""

    exit_code = 2


class OutputExistsError(KoloError):
    """The output folder already holds a finished run (or is locked by a running one)."""

    exit_code = 4


class ExportError(KoloError):
    exit_code = 5


class VerificationError(KoloError):
    exit_code = 6
