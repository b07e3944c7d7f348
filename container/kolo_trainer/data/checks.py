"""Is a row a conversation kolo can train on? Role names, message shape, text content, duplicates, and the one
rule that turns problems into an error (:func:`raise_if_invalid`).

Every conversation is ``[system?] user assistant (user assistant)* [user]``: at most one system message and only
first, strictly alternating user/assistant, starting with a user turn, at least one assistant turn, non-empty
string contents without lone surrogates. Role names are normalised (case-insensitive): human -> user,
gpt/model -> assistant.

Two ways to judge a message list, with the same verdicts: :func:`messages` words every reason (slow, exact), and
:func:`fast_conversation` only says yes (cheap, for the rows that are fine) or "look closer".
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Optional

from ..errors import DataError
from .results import Bad, DropReport, LoadResult, type_name

ROLE_ALIASES = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "model": "assistant",
}


# ------------------------------------------------------------------------------------------------ text


def lone_surrogate_at(text: str) -> int:
    """Index of the first lone surrogate in ``text``, or -1. JSON's ``"\\ud800"`` escape decodes to one: Python
    accepts it, but it is not Unicode, and the tokenizer would crash on it long after the check said "fine"."""
    if text.isascii():  # O(1): CPython knows it
        return -1
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return -1


def surrogate_reason(text: str, where: str) -> Optional[str]:
    at = lone_surrogate_at(text)
    if at < 0:
        return None
    return (f"{where} contains a lone surrogate (invalid Unicode) at character {at + 1}, "
            f"from a \"\\u{ord(text[at]):04x}\" escape without its pair; fix or remove it")


def any_lone_surrogate(contents: Any) -> bool:
    """Whether any of the strings ``contents`` holds a lone surrogate (one C-level pass over them)."""
    if all(map(str.isascii, contents)):
        return False
    return lone_surrogate_at("".join(contents)) >= 0


def text_field(obj: dict, key: str, required: bool = True) -> str:
    """``obj[key]`` as a string (``""`` when optional and absent); raises Bad naming the key otherwise."""
    v = obj.get(key)
    if v is None:
        if required:
            raise Bad(f"missing '{key}'", "missing_field")
        return ""
    if type(v) is not str:
        raise Bad(f"'{key}' must be a string, got {type_name(v)}", "wrong_type")
    if required and not v.strip():
        raise Bad(f"'{key}' is empty", "empty")
    bad = surrogate_reason(v, f"'{key}'")
    if bad:
        raise Bad(bad, "invalid_unicode")
    return v


def _content(v: Any, where: str) -> str:
    if type(v) is str:
        return v
    if type(v) is list:  # OpenAI content parts: only text parts can be trained on
        parts = []
        for p in v:
            if type(p) is dict and p.get("type") == "text" and type(p.get("text")) is str:
                parts.append(p["text"])
            else:
                raise Bad(f"{where}: only text content parts are supported, got {type_name(p)} "
                          f"{(p.get('type') if type(p) is dict else '')!s}".rstrip(), "wrong_type")
        return "".join(parts)
    raise Bad(f"{where}: content must be a string, got {type_name(v)}", "wrong_type")


# ------------------------------------------------------------------------------------------------ messages


def _message(i: int, m: Any, reasons: list[str]) -> Optional[dict]:
    """Message ``i`` normalised to ``{"role", "content"}``, or None with its reason added to ``reasons``."""
    if type(m) is not dict:
        reasons.append(f"message {i} must be an object, got {type_name(m)}")
        return None
    if "role" in m:
        role, content = m["role"], m.get("content")
    elif "from" in m:
        role, content = m["from"], m.get("value")
    else:
        reasons.append(f"message {i} has no 'role' (or 'from')")
        return None
    if type(role) is not str:
        reasons.append(f"message {i}: role must be a string, got {type_name(role)}")
        return None
    r = ROLE_ALIASES.get(role) or ROLE_ALIASES.get(role.strip().lower())
    if r is None:
        reasons.append(f"message {i}: unknown role {role!r} (use system, user or assistant)")
        return None
    try:
        text = _content(content, f"message {i} ({r})")
    except Bad as b:
        reasons.append(b.reason)
        return None
    if not text.strip():
        reasons.append(f"message {i} ({r}): empty content")
    bad = surrogate_reason(text, f"message {i} ({r}):")
    if bad:
        reasons.append(bad)
    return {"role": r, "content": text}


def messages(raw: Any, key: str) -> list:
    """Normalise a list of role/content (or from/value) dicts and check the conversation's shape; raises Bad
    with every reason."""
    if type(raw) is not list:
        raise Bad(f"'{key}' must be a list of messages, got {type_name(raw)}", "wrong_type")
    if not raw:
        raise Bad(f"'{key}' is empty", "empty")
    reasons: list[str] = []
    out = [m for m in (_message(i, m, reasons) for i, m in enumerate(raw, 1)) if m is not None]
    if len(out) == len(raw):  # every message understood: the conversation's shape can be judged too
        check_shape(out, reasons)
    if reasons:
        raise Bad("; ".join(reasons), "invalid")
    return out


def check_shape(msgs: list, reasons: list[str]) -> None:
    """Add to ``reasons`` what is wrong with the order of the (normalised) roles."""
    prev = None
    seen_user = False
    has_assistant = False
    for i, m in enumerate(msgs, 1):
        r = m["role"]
        if r == "system":
            if i != 1:
                reasons.append(f"message {i}: a system message must come first (and only once)")
        else:
            if r == prev:
                reasons.append(f"messages {i - 1} and {i}: two {r} turns in a row")
            if r == "assistant":
                has_assistant = True
                if not seen_user:
                    reasons.append(f"message {i}: assistant turn before any user turn")
            else:
                seen_user = True
        prev = r
    if not has_assistant:
        reasons.append("no assistant turn (nothing to train on)")


# ------------------------------------------------------------------------------------------------ fast verdicts

get_role, get_content = itemgetter("role"), itemgetter("content")
get_from, get_value = itemgetter("from"), itemgetter("value")
_shape_cache: dict[tuple, Optional[tuple]] = {}
shape_get = _shape_cache.get


def canonical_shape(roles: tuple) -> Optional[tuple]:
    """Canonical role tuple when ``roles`` is a valid conversation shape, else None (cached: few distinct shapes)."""
    try:
        return _shape_cache[roles]
    except KeyError:
        pass
    canon: Optional[list] = []
    for r in roles:
        c = ROLE_ALIASES.get(r) if type(r) is str else None
        if c is None and type(r) is str:
            c = ROLE_ALIASES.get(r.strip().lower())
        if c is None:
            canon = None
            break
        canon.append(c)
    result: Optional[tuple] = None
    if canon is not None:
        reasons: list[str] = []
        check_shape([{"role": c} for c in canon], reasons)
        result = None if reasons else tuple(canon)
    if len(_shape_cache) < 4096:
        _shape_cache[roles] = result
    return result


def fast_conversation(raw: Any) -> Optional[tuple[tuple, list]]:
    """(roles, contents) for a well-formed message list, using C-level map/itemgetter; None means "look closer".

    Most rows are fine, so the exact (and slower) diagnosis in :func:`messages` runs only for the rest.
    """
    if type(raw) is not list or not raw or type(raw[0]) is not dict:
        return None
    try:
        if "role" in raw[0]:
            roles = tuple(map(get_role, raw))
            contents = list(map(get_content, raw))
        else:
            roles = tuple(map(get_from, raw))
            contents = list(map(get_value, raw))
        canon = canonical_shape(roles)
        # str.strip raises TypeError for a non-string content; an all-blank content strips to "" (falsy).
        if canon is None or not all(map(str.strip, contents)) or any_lone_surrogate(contents):
            return None
    except (KeyError, TypeError):
        return None
    return canon, contents


# ------------------------------------------------------------------------------------------------ warnings


def dup_reason(first: int) -> str:
    return f"duplicate of line {first} (same conversation)"


TRAILING_USER = "ends with a user turn, which is not trained on"


# ------------------------------------------------------------------------------------------------ verdict


def raise_if_invalid(result: LoadResult, skip_invalid: bool) -> DropReport:
    """Raise one DataError listing every problem; with ``skip_invalid``, report what is dropped instead.

    File-level problems (missing, empty, binary) and a file with no valid row always raise.
    """
    problems = result.problems
    fatal = [p for p in problems if p.kind == "file"]
    if fatal or (problems and not skip_invalid):
        raise DataError([str(p) for p in problems],
                        hint=None if fatal else "fix them, or pass --skip-invalid to train on the valid rows "
                        "(the dropped rows are listed in the run's kolo.json)")
    valid = result.rows_valid
    if valid <= 0:
        raise DataError([str(p) for p in problems] or [f"{result.file}:1: no valid rows"],
                        head=f"no valid rows in {result.file}")
    by_kind: dict[str, int] = {}
    dropped_lines: dict[int, str] = {}
    for p in problems:
        if p.line not in dropped_lines:
            by_kind[p.kind] = by_kind.get(p.kind, 0) + 1
            dropped_lines[p.line] = p.reason
    return DropReport(count=len(dropped_lines), by_kind=by_kind,
                      dropped=[{"line": ln, "reason": r} for ln, r in dropped_lines.items()])
