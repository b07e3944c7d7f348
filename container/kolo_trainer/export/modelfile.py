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


@dataclass
class Parsed:
    from_: Optional[str] = None
    adapter: Optional[str] = None
    template: Optional[str] = None
    system: Optional[str] = None
    parameters: dict[str, list[str]] = field(default_factory=dict)


def _unquote(s: str) -> tuple[str, bool]:
    if len(s) >= 3 and s[:3] == '"""':
        if len(s) >= 6 and s[-3:] == '"""':
            return s[3:-3], True
        return "", False
    if len(s) >= 1 and s[0] == '"':
        if len(s) >= 2 and s[-1] == '"':
            return s[1:-1], True
        return "", False
    return s, True


def _go_isprint(c: str) -> bool:
    return c == " " or (c.isprintable() and not c.isspace())


def parse(text: str) -> Parsed:
    """Read a Modelfile the way Ollama's ``parser.ParseFile`` does (a port of its state machine, commands we
    write only). Raises ExportError where Ollama would refuse the file."""
    NIL, NAME, VALUE, PARAM, COMMENT = range(5)
    cmds: list[tuple[str, str]] = []
    curr, b, name = NIL, [], ""
    line = 1

    def is_space(c: str) -> bool:
        return c in " \t"

    def is_nl(c: str) -> bool:
        return c in "\r\n"

    for r in text:
        if is_nl(r):
            line += 1
        # parseRuneForState
        if curr == NIL:
            nxt = COMMENT if r == "#" else (NIL if is_space(r) or is_nl(r) else NAME)
            keep = nxt == NAME
        elif curr == NAME:
            if r.isascii() and r.isalpha():
                nxt, keep = NAME, True
            elif is_space(r):
                nxt, keep = VALUE, False
            else:
                raise ExportError(f"Modelfile line {line}: invalid command")
        elif curr == VALUE:
            nxt, keep = (NIL, True) if (is_nl(r) or is_space(r)) else (VALUE, True)
        elif curr == PARAM:
            if (r.isascii() and (r.isalnum())) or r == "_":
                nxt, keep = PARAM, True
            elif is_space(r):
                nxt, keep = VALUE, False
            else:
                raise ExportError(f"Modelfile line {line}: unexpected character in a parameter name")
        else:  # COMMENT
            nxt, keep = (NIL, False) if is_nl(r) else (COMMENT, False)
        if nxt != curr:
            if curr == NAME:
                word = "".join(b).lower()
                if word not in ("from", "license", "template", "system", "adapter", "parameter", "message"):
                    raise ExportError(f"Modelfile line {line}: unknown command {word!r}")
                if word == "parameter":
                    nxt = PARAM
                else:
                    name = "model" if word == "from" else word
            elif curr == PARAM:
                name = "".join(b)
            elif curr == VALUE:
                s, ok = _unquote("".join(b).strip())
                if not ok or is_space(r):
                    b.append(r)
                    continue
                cmds.append((name, s))
            b = []
            curr = nxt
        if keep and _go_isprint(r):
            b.append(r)
    if curr == VALUE:
        s, ok = _unquote("".join(b).strip())
        if not ok:
            raise ExportError("Modelfile: unterminated quoted value at the end")
        cmds.append((name, s))
    elif curr not in (NIL, COMMENT):
        raise ExportError("Modelfile: unexpected end of file")
    out = Parsed()
    for n, v in cmds:
        if n == "model":
            out.from_ = v
        elif n == "adapter":
            out.adapter = v
        elif n == "template":
            out.template = v
        elif n == "system":
            out.system = v
        elif n not in ("license", "message"):
            out.parameters.setdefault(n, []).append(v)
    if out.from_ is None:
        raise ExportError("Modelfile: no FROM line")
    return out
