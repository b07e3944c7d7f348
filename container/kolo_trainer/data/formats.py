"""The data formats kolo reads: ONE table (:data:`TABLE`). Adding a format is one :class:`Format` entry here;
the ``--format`` choices (``FORMATS``, ``options.DATA_FORMATS``), detection, the "expected ..." hint and the help
text all come from it.

A row is one JSON object (a JSONL line, an element of a JSON list, a CSV record with a header). Each format says
how to recognise such a row and how it becomes ``[{"role", "content"}]`` messages; the conversation rules
themselves are :mod:`.checks`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import OptionsError
from . import checks
from .results import Bad, shown


@dataclass(frozen=True)
class Format:
    name: str
    fields: str  # how its rows are named in "expected ..." messages
    help: str  # one line: the shape of a row and what it becomes
    detect: Callable[[dict], bool]  # does this row look like this format? (first match in TABLE wins)
    to_messages: Callable[[dict], list]  # the row as messages; raises Bad with every reason
    #: formats whose row holds a message list: the keys that may hold it, in order (the fast paths use it);
    #: in a CSV file these columns always hold JSON text
    list_keys: tuple[str, ...] = ()
    #: CSV columns that hold a JSON list of messages when the cell starts with ``[{`` (else plain text)
    csv_list_columns: tuple[str, ...] = ()


def _from_style(msgs: Any) -> bool:
    """A message list in ShareGPT's from/value style (judged by its first message)."""
    return type(msgs) is list and bool(msgs) and type(msgs[0]) is dict and "from" in msgs[0] \
        and "role" not in msgs[0]


def message_list_key(fmt: Format, obj: dict) -> Optional[str]:
    """The key of ``obj`` that holds the message list for ``fmt`` (None: not this format, or not a list format)."""
    for key in fmt.list_keys:
        if key in obj:
            return key
    return None


def not_format(obj: dict, fmt: str) -> str:
    keys = ", ".join(shown(str(k)) for k in list(obj)[:8]) or "none"
    return f"row is not in {fmt} format (keys: {keys}); expected {FIELD_HINT}"


def _list_format(name: str) -> Callable[[dict], list]:
    def to_messages(obj: dict) -> list:
        key = message_list_key(BY_NAME[name], obj)
        if key is None:
            raise Bad(not_format(obj, name), "wrong_format")
        return checks.messages(obj[key], key)
    return to_messages


def _alpaca(obj: dict) -> list:
    if "instruction" not in obj or "output" not in obj:
        raise Bad(not_format(obj, "alpaca"), "wrong_format")
    instruction = checks.text_field(obj, "instruction")
    inp = checks.text_field(obj, "input", required=False)
    output = checks.text_field(obj, "output")
    system = checks.text_field(obj, "system", required=False)
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    user = instruction + ("\n\n" + inp if inp.strip() else "")
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _prompt_completion(obj: dict) -> list:
    if "prompt" not in obj or "completion" not in obj:
        raise Bad(not_format(obj, "prompt_completion"), "wrong_format")
    p, c = obj["prompt"], obj["completion"]
    if type(p) is list and type(c) is list:  # TRL's conversational prompt/completion
        return checks.messages(p + c, "prompt + completion")
    return [{"role": "user", "content": checks.text_field(obj, "prompt")},
            {"role": "assistant", "content": checks.text_field(obj, "completion")}]


def _text(obj: dict) -> list:
    if "text" not in obj:
        raise Bad(not_format(obj, "text"), "wrong_format")
    return [{"role": "text", "content": checks.text_field(obj, "text")}]


#: Every format, in detection order.
TABLE: tuple[Format, ...] = (
    Format("messages", "messages (OpenAI)",
           'OpenAI {"messages": [{"role": "system|user|assistant", "content": "..."}]}, multi-turn',
           lambda o: "messages" in o and not _from_style(o["messages"]),
           _list_format("messages"), ("messages",)),
    Format("sharegpt", "conversations (ShareGPT)",
           'ShareGPT {"conversations": [{"from": "system|human|gpt", "value": "..."}]} (user/assistant too)',
           lambda o: "conversations" in o or ("messages" in o and _from_style(o["messages"])),
           _list_format("sharegpt"), ("conversations", "messages")),
    Format("alpaca", "instruction/output (Alpaca)",
           'Alpaca {"instruction", "input"?, "output", "system"?}: user = instruction (+ blank line + input)',
           lambda o: "instruction" in o and "output" in o, _alpaca),
    Format("prompt_completion", "prompt/completion",
           '{"prompt", "completion"}: strings (one user + one assistant turn), or lists of messages',
           lambda o: "prompt" in o and "completion" in o, _prompt_completion,
           csv_list_columns=("prompt", "completion")),
    # Trained as continued pre-training: no chat template, BOS + text + EOS, loss on every token
    # (masking.encode handles the "text" role). Text rows need no assistant turn.
    Format("text", "text", '{"text": "..."}: a plain document, trained on every token (no chat template)',
           lambda o: "text" in o, _text),
)

BY_NAME: dict[str, Format] = {f.name: f for f in TABLE}
#: The ``--format`` choices: auto (detect from the first recognisable row) and every format.
FORMATS: tuple[str, ...] = ("auto", *BY_NAME)
FIELD_HINT = ", ".join(f.fields for f in TABLE[:-1]) + " or " + TABLE[-1].fields
#: CSV columns whose cells are parsed as JSON: always, and only when they hold a list of messages
CSV_JSON_COLUMNS = tuple(dict.fromkeys(k for f in TABLE for k in f.list_keys))
CSV_MAYBE_JSON_COLUMNS = tuple(dict.fromkeys(k for f in TABLE for k in f.csv_list_columns))


def check_format(fmt: str) -> str:
    """``fmt`` when it is a known ``--format`` value; else OptionsError (exit 2) naming the choices."""
    if fmt not in FORMATS:
        raise OptionsError([f"unknown data format {shown(str(fmt))!r}; choose from {', '.join(FORMATS)}"])
    return fmt


def detect(obj: Any) -> Optional[str]:
    """The format a single row looks like, or None."""
    if type(obj) is not dict:
        return None
    for f in TABLE:
        if f.detect(obj):
            return f.name
    return None


def row_messages(obj: dict, fmt: str) -> list:
    """The row as ``[{"role", "content"}]`` in format ``fmt`` (a name from the table); raises Bad."""
    return BY_NAME[fmt].to_messages(obj)


def help_text() -> str:
    """The formats for ``--help`` and docs, one per line."""
    return "\n".join(f"{f.name}: {f.help}" for f in TABLE)
