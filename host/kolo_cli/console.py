"""The one way the host prints: rich consoles on which user text is inert, and the one error report.

Run names, file names, model names and trainer output are user data. Printed through rich's defaults they would be
read as markup (``x[/]`` crashes the printer, ``exports [v2]/`` loses ``[v2]``) and emoji codes (``a:b:c`` shows
as ``a🅱c``). These consoles turn markup, emoji codes and highlighting off; colour is added only through ``Text``
styles on kolo's own words (``error:``, ``hint:``), never by interpolating into a markup string.
"""

from __future__ import annotations

import functools
from typing import Any

ERROR_STYLE = "bold red"
HINT_STYLE = "yellow"


@functools.lru_cache(maxsize=2)
def _console(stderr: bool) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)


def out() -> Any:
    """The stdout console (tables, results)."""
    return _console(False)


def err() -> Any:
    """The stderr console (progress notes, warnings, errors)."""
    return _console(True)


def styled(label: str, style: str, text: str) -> Any:
    """``label`` in ``style`` followed by ``text`` as plain, inert text."""
    from rich.text import Text

    return Text.assemble((label, style), " ", text)


def say(label: str, style: str, text: str, stderr: bool = False) -> None:
    (err() if stderr else out()).print(styled(label, style, text))


def report(message: str, hint: str | None = None) -> None:
    """``error: MESSAGE`` and ``hint: HINT`` on stderr: the only error output of the host."""
    say("error:", ERROR_STYLE, message, stderr=True)
    if hint:
        say("hint:", HINT_STYLE, hint, stderr=True)


def warn(text: str) -> None:
    say("warning:", HINT_STYLE, text, stderr=True)
