"""Stage 4: one Ollama Modelfile per GGUF, and a faithful reader of the format (to verify what Ollama will read).

Quoting follows Ollama's parser (parser/parser.go, ``ParseFile`` + ``unquote``): a value ends at the first newline
at which the trimmed value unquotes, so

* TEMPLATE and SYSTEM are always written as ``\"\"\"...\"\"\"``: newlines, single quotes, ``"``, ``\\``, ``{{`` and
  leading/trailing spaces are kept verbatim (there are no escape sequences). The one thing that cannot be written is
  ``\"\"\"`` inside the value;
* stop strings are written ``"..."`` (or ``\"\"\"...\"\"\"`` when they contain a newline);
* Ollama's parser drops every non-printable character except space, tab and newlines (``strconv.IsPrint``);
  such a value is refused here instead of being silently changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import ExportError

HEADER = "# Written by `kolo export`. Create the Ollama model from this folder with:\n#   ollama create {model} -f {name}\n"


def _check(value: str, what: str) -> None:
    bad = sorted({repr(c) for c in value if not (c.isprintable() or c in " \t\n\r")})
    if bad:
        raise ExportError(f"{what} contains characters Ollama's Modelfile parser drops: {', '.join(bad)}",
                          "remove them (e.g. pass a clean --system)")
    if '"""' in value:
        raise ExportError(f'{what} contains """, which a Modelfile cannot hold (Ollama has no escape for it)',
                          "rephrase it without three double quotes in a row")


def block(value: str, what: str) -> str:
    _check(value, what)
    return '"""' + value + '"""'


def quoted(value: str, what: str) -> str:
    _check(value, what)
    if not value:
        raise ExportError(f"{what} is empty")
    # "..." cannot hold a newline after a '"' nor start with two '"': triple quotes whenever either could occur.
    if '"' in value or "\n" in value or "\r" in value:
        return '"""' + value + '"""'
    return '"' + value + '"'


def _fmt_float(v: float) -> str:
    return repr(float(v))  # shortest exact form: 0.7, 0.9, 1.0


def render(*, gguf_file: str, template: Optional[str], stop: list[str], num_ctx: int, system: Optional[str],
           temperature: float, top_p: float, adapter_file: Optional[str] = None, model_name: str = "MODEL",
           modelfile_name: str = "Modelfile", template_note: Optional[str] = None) -> str:
    """The Modelfile text. ``template=None`` writes a loud comment instead of a TEMPLATE (none could be proven)."""
    lines = [HEADER.format(model=model_name, name=modelfile_name).rstrip("\n")]
    # Unquoted (Ollama reads the rest of the line; spaces and quotes inside a file name are kept), but a character
    # its parser would drop would point FROM at another file.
    _check(gguf_file, "the GGUF file name")
    lines.append(f"FROM ./{gguf_file}")
    if adapter_file:
        _check(adapter_file, "the adapter file name")
        lines.append(f"ADAPTER ./{adapter_file}")
    if template is not None:
        lines.append("TEMPLATE " + block(template, "the TEMPLATE"))
    else:
        note = template_note or "no Ollama TEMPLATE could be proven equivalent to the training chat template"
        lines.append("# WARNING: " + " ".join(note.split()))
        lines.append("# WARNING: without TEMPLATE Ollama uses the GGUF's own chat template, which may prompt the model")
        lines.append("# WARNING: differently from training. Re-train with --chat-template NAME (a registry template).")
    if system:
        lines.append("SYSTEM " + block(system, "the SYSTEM prompt"))
    for s in stop:
        lines.append("PARAMETER stop " + quoted(s, f"stop string {s!r}"))
    lines.append(f"PARAMETER num_ctx {int(num_ctx)}")
    lines.append(f"PARAMETER temperature {_fmt_float(temperature)}")
    lines.append(f"PARAMETER top_p {_fmt_float(top_p)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ reading


# One parser for what Ollama reads, shared with the host's `kolo ollama-install` (kolo_cli.ollama_client).
@dataclass
class Modelfile:
    """The instructions of an Ollama Modelfile, as Ollama itself would read them."""

    from_: Optional[str] = None
    adapters: list[str] = field(default_factory=list)
    template: Optional[str] = None
    system: Optional[str] = None
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    parameters: dict[str, list[str]] = field(default_factory=dict)  # raw strings, in file order

    @property
    def adapter(self) -> Optional[str]:
        """The first ADAPTER (kolo writes at most one)."""
        return self.adapters[0] if self.adapters else None


_COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
             "message", "requires"}


def _unquote(s: str) -> tuple[str, bool]:
    # Ollama's unquote: strips one level of """...""" or "..."; no escape processing at all.
    if s.startswith('"""'):
        if len(s) >= 6 and s.endswith('"""'):
            return s[3:-3], True
        return "", False
    if s.startswith('"'):
        if len(s) >= 2 and s.endswith('"'):
            return s[1:-1], True
        return "", False
    return s, True


def parse(text: str, source: str = "Modelfile") -> Modelfile:
    """Parse a Modelfile with the same rules as Ollama's parser (parser/parser.go).

    A port rather than a regex because the edge cases matter: values end at the first space or newline that
    leaves a complete (un)quoted value, so ``"a b"`` and ``\"\"\"multi\\nline\"\"\"`` stay whole; quotes carry no
    escapes; ``#`` starts a comment only at the start of an instruction.
    """
    text = text.lstrip("\ufeff")
    NIL, NAME, VALUE, PARAM, MESSAGE, COMMENT = range(6)
    state, buf, line = NIL, [], 1
    cmd_name = ""
    role = ""
    commands: list[tuple[str, str]] = []

    def fail(msg: str) -> ExportError:
        return ExportError(f"{source}:{line}: {msg}")

    for ch in text:
        if ch in "\r\n":
            line += 1
        # next state for this rune (parseRuneForState)
        keep: Optional[str] = ch
        if state == NIL:
            if ch == "#":
                nxt, keep = COMMENT, None
            elif ch in " \t\r\n":
                nxt, keep = NIL, None
            else:
                nxt = NAME
        elif state == NAME:
            if ch.isascii() and ch.isalpha():
                nxt = NAME
            elif ch in " \t":
                nxt, keep = VALUE, None
            else:
                raise fail(f"unknown instruction {''.join(buf) + ch!r}")
        elif state == VALUE:
            nxt = NIL if ch in " \t\r\n" else VALUE
        elif state == PARAM:
            if (ch.isascii() and ch.isalnum()) or ch == "_":
                nxt = PARAM
            elif ch in " \t":
                nxt, keep = VALUE, None
            else:
                raise fail("PARAMETER needs a name and a value")
        elif state == MESSAGE:
            if ch.isascii() and ch.isalpha():
                nxt = MESSAGE
            elif ch in " \t":
                nxt, keep = VALUE, None
            else:
                raise fail("MESSAGE needs a role and a value")
        else:  # COMMENT
            nxt, keep = (NIL, None) if ch in "\r\n" else (COMMENT, None)

        if nxt != state:
            if state == NAME:
                word = "".join(buf).lower()
                if word not in _COMMANDS:
                    raise fail(f"unknown instruction {''.join(buf)!r}")
                if word == "parameter":
                    nxt = PARAM
                elif word == "message":
                    nxt = MESSAGE
                    cmd_name = word
                else:
                    cmd_name = word
            elif state == PARAM:
                cmd_name = "".join(buf)
            elif state == MESSAGE:
                role = "".join(buf)
                if role not in ("system", "user", "assistant"):
                    raise fail('MESSAGE role must be "system", "user" or "assistant"')
            elif state == VALUE:
                value, ok = _unquote("".join(buf).strip())
                if not ok or ch in " \t":
                    buf.append(ch)  # still inside a quoted value, or a space inside a bare value
                    continue
                commands.append((cmd_name, f"{role}: {value}" if role else value))
                role = ""
            buf = []
            state = nxt
        if keep is not None and keep.isprintable():  # Go strconv.IsPrint: control runes are dropped
            buf.append(keep)

    if state == VALUE:
        value, ok = _unquote("".join(buf).strip())
        if not ok:
            raise fail("unterminated quoted value")
        commands.append((cmd_name, f"{role}: {value}" if role else value))
    elif state not in (NIL, COMMENT):
        raise fail("unexpected end of file")

    mf = Modelfile()
    for name, args in commands:
        if name == "from":
            mf.from_ = args
        elif name == "adapter":
            mf.adapters.append(args)
        elif name == "template":
            mf.template = args
        elif name == "system":
            mf.system = args
        elif name == "license":
            mf.license.append(args)
        elif name == "message":
            r, _, content = args.partition(": ")
            mf.messages.append({"role": r, "content": content})
        elif name in ("draft", "renderer", "parser", "requires"):
            raise ExportError(f"{source}: {name.upper()} is not supported by kolo")
        else:
            mf.parameters.setdefault(name, []).append(args)
    if mf.from_ is None:
        raise ExportError(f"{source}: no FROM line")
    return mf
