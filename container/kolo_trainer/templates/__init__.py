"""The chat-template registry: one entry per template family, each carrying everything training AND export need.

Vendor entries (``families.py``: Llama 3.1/3.2/3.3, Qwen 2.5/3, Gemma 2/3, Phi-3.5/4, Mistral v0.3/Nemo, the
DeepSeek-R1 distills, SmolLM3, Granite 3.3) hold the vendor's real chat template byte for byte (``<name>.jinja``,
source recorded) and its Go twin (``<name>.gotmpl``); generic formats for base models (``chatml``, ``alpaca``) have
names that do not pretend to be a vendor's. A vendor name (``llama-3``, ``mistral``, ``gemma``, ``phi-3``, ``qwen``)
means that vendor's real template (``families.ALIASES``). An entry (:class:`Template`) holds

* ``jinja``: a Hugging Face chat template, used for training;
* ``ollama``: the equivalent Ollama ``TEMPLATE`` in Go text/template syntax, used in the Modelfile;
* ``stop``: every string at which generation must stop. ``stop[0]`` is THE end-of-turn string of an assistant reply
  (tiny.py makes it the tokenizer's eos; masking trains on it);
* ``special_tokens``: strings that must be single tokens in the vocabulary for the template to work as intended;
* ``bos``: a note on how the beginning-of-sequence token is handled; ``date_format`` and ``residual`` (below).

What a Go template cannot express, handled on purpose
-----------------------------------------------------
Ollama's template functions are Go's built-ins plus ``json``, ``currentDate`` (always YYYY-MM-DD),
``yesterdayDate`` and ``toTypeScriptType``: no trim, no split, no replace.

* Dates: a run pins the date its template prints (``strftime_now``; :func:`resolve` pins it for the process and
  records it, ``kolo.json`` ``chat_template.date``); the Go twin writes that same date literally
  (:meth:`Template.ollama_for`).
* Trimming: THE rule is :func:`prepare_messages`: a template that trims contents gets every message stripped
  before rendering, in training, in the proofs and in verification. What stays unequal: a content with
  leading/trailing whitespace sent to Ollama at serving time.
* Thinking: Qwen 3's twin renders ``.Thinking`` where the template renders ``reasoning_content``; splitting
  ``</think>`` out of a content cannot be expressed. Each entry's ``residual`` lists what stays unequal; the export's
  verification reports it.

Equivalence, and what "equal" means
-----------------------------------
The Go template is equivalent to the Jinja one when, for the same conversation, Ollama's rendering equals
``jinja(messages, add_generation_prompt=<last message is not an assistant>)``. Ollama always renders "prompt for
the next reply": after a user turn it appends the assistant header (= ``add_generation_prompt=True``); a
conversation ending with an assistant turn is rendered completely (= ``add_generation_prompt=False``). The
equivalence is tested with the real Go ``text/template`` (``gorender``) for every entry, and can be checked at run
time by :func:`check_ollama_equivalence`.

BOS rule
--------
llama.cpp (and so Ollama) add the BOS token themselves when tokenising a prompt (GGUF ``add_bos_token``); an Ollama
template therefore never contains BOS. HF templates conventionally start with ``{{ bos_token }}`` so that
tokenising the rendered text with ``add_special_tokens=False`` yields exactly one BOS. Registry Jinja templates
follow that convention (except chatml, whose Qwen original has no BOS). Every comparison (Jinja vs Go, model
template vs registry template) renders with ``bos_token=""`` and removes a literal leading BOS string, so BOS
never causes a difference; ``masking.encode`` renders with the real ``bos_token`` and adds BOS only when the
tokenizer would add one and the text does not already start with it (never doubled).

Light module: stdlib only at import time; jinja2 is imported inside the functions that render.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

__all__ = [
    "Template", "ResolvedTemplate", "REGISTRY", "ALL_SPECIAL_TOKENS", "BATTERY", "get", "names", "render",
    "resolve", "match_registry", "check_ollama_equivalence", "TemplateError", "prepare_messages", "pin_date",
    "trims", "union_stops",
]


class TemplateError(ValueError):
    """A template could not be rendered (syntax error, raise_exception(), unsupported role...)."""


@dataclass(frozen=True)
class Template:
    name: str
    jinja: str
    ollama: str
    stop: tuple[str, ...]
    special_tokens: tuple[str, ...]
    bos: str
    description: str = ""
    source: str = "kolo (a generic format, not a vendor's template)"
    bos_token: str = ""
    eos_token: Optional[str] = None
    date_format: Optional[str] = None  # strftime format of the date the template prints (pinned in training)
    residual: tuple[str, ...] = ()  # what the Go twin cannot reproduce (listed by the export's verification)

    @property
    def end_of_turn(self) -> str:
        """The string that closes an assistant reply (trained on; the tokenizer's eos in tiny models)."""
        return self.stop[0]

    def ollama_for(self, date: Optional[str]) -> str:
        """The Go twin with the pinned date (YYYY-MM-DD) written literally where the template prints a date."""
        if self.date_format is None:
            return self.ollama
        return self.ollama.replace(DATE_MARK, format_date(date or today(), self.date_format))


#: Where a Go twin prints the pinned date (Ollama's currentDate is always today, in YYYY-MM-DD only).
DATE_MARK = "__KOLO_DATE__"


def today() -> str:
    from datetime import date

    return date.today().isoformat()


def format_date(date: str, fmt: str) -> str:
    from datetime import datetime

    return datetime.strptime(date, "%Y-%m-%d").strftime(fmt)


# ------------------------------------------------------------------------------------------------ registry
# Generic formats for base models (no vendor's name). Conventions, so that the Go twin mirrors the Jinja exactly:
#   * the system prompt is messages[0] when its role is "system"; Ollama exposes it as .System and ALSO keeps it in
#     .Messages, so Go templates that place the system prompt specially skip it inside the range;
#   * the Go templates remember the last role and append the generation prompt unless it was "assistant".

_CHATML = Template(
    name="chatml",
    jinja=(
        r"{%- for message in messages -%}"
        r"{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
    ),
    ollama=(
        "{{- $last := \"\" }}\n"
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ $last = .Role }}\n"
        "{{- end }}\n"
        "{{- if ne $last \"assistant\" }}<|im_start|>assistant\n"
        "{{ end }}"
    ),
    stop=("<|im_end|>", "<|im_start|>"),
    special_tokens=("<|im_start|>", "<|im_end|>"),
    bos="none: Qwen's tokenizers have no BOS and the template renders none; with a tokenizer that adds BOS, "
        "llama.cpp and masking.encode add exactly one.",
    description="ChatML as used by Qwen 2 / 2.5 (without Qwen's default system prompt).",
)

_ALPACA = Template(
    name="alpaca",
    jinja=(
        r"{{- bos_token -}}"
        r"{%- for message in messages -%}"
        r"{%- if message['role'] == 'system' -%}{{- message['content'] + '\n\n' -}}"
        r"{%- elif message['role'] == 'user' -%}{{- '### Instruction:\n' + message['content'] + '\n\n' -}}"
        r"{%- elif message['role'] == 'assistant' -%}{{- '### Response:\n' + message['content'] + '</s>\n\n' -}}"
        r"{%- endif -%}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{- '### Response:\n' -}}{%- endif -%}"
    ),
    ollama=(
        "{{- $last := \"\" }}\n"
        "{{- range .Messages }}\n"
        "{{- if eq .Role \"system\" }}{{ .Content }}\n\n"
        "{{ else if eq .Role \"user\" }}### Instruction:\n"
        "{{ .Content }}\n\n"
        "{{ else if eq .Role \"assistant\" }}### Response:\n"
        "{{ .Content }}</s>\n\n"
        "{{ end }}\n"
        "{{- $last = .Role }}\n"
        "{{- end }}\n"
        "{{- if ne $last \"assistant\" }}### Response:\n"
        "{{ end }}"
    ),
    stop=("</s>", "### Instruction:", "### Response:"),
    special_tokens=(),
    bos="{{ bos_token }} starts the Jinja rendering. A reply ends with the literal '</s>': the EOS of "
        "SentencePiece tokenizers; with another tokenizer it is plain text the model learns to write, and the "
        "'</s>' stop string still ends generation in Ollama.",
    description="Alpaca ### Instruction / ### Response format (multi-turn by repetition; optional system preamble).",
)



def _read(name: str) -> str:
    from importlib import resources

    return (resources.files(__name__) / name).read_text(encoding="utf-8")


def _go_file(name: str) -> str:
    text = _read(name)
    # The files end with a newline after the last action; it is not part of the template.
    return text[:-1] if text.endswith("}}\n") else text


def _vendor(name: str, facts: dict) -> Template:
    return Template(name=name, jinja=_read(f"{name}.jinja"), ollama=_go_file(f"{name}.gotmpl"),
                    stop=tuple(facts["stop"]), special_tokens=tuple(facts["special_tokens"]),
                    bos=f"{facts['bos_token'] or 'none'} (the vendor tokenizer's BOS; never in the Ollama template)",
                    description=facts["description"], source=facts["source"], bos_token=facts["bos_token"],
                    eos_token=facts["eos_token"], date_format=facts["date_format"],
                    residual=tuple(facts["residual"]))


def _build_registry() -> dict[str, Template]:
    from .families import FAMILIES

    reg = {name: _vendor(name, facts) for name, facts in FAMILIES.items()}
    reg.update({t.name: t for t in (_CHATML, _ALPACA)})
    return reg


REGISTRY: dict[str, Template] = _build_registry()

#: The special tokens tiny.py adds to its demo vocabularies: those of the demo formats (one per turn-token style).
ALL_SPECIAL_TOKENS: tuple[str, ...] = tuple(dict.fromkeys(
    t for n in ("llama-3.1", "chatml", "mistral-v0.3", "gemma-3", "phi-3.5") for t in REGISTRY[n].special_tokens))


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Template:
    """The registry entry ``name`` (case-insensitive; vendor names such as ``llama-3`` or ``gemma`` name the
    vendor's real template, see ``families.ALIASES``)."""
    from .families import ALIASES

    key = name.strip().lower()
    key = ALIASES.get(key, key)
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown chat template {name!r}; choose from {', '.join(REGISTRY)} "
                       "or give a .jinja file relative to the data root") from None


# ------------------------------------------------------------------------------------------------ rendering


@functools.lru_cache(maxsize=64)
def _compile(jinja: str):
    """Compile like transformers' ``apply_chat_template`` does (same environment, options, filters, globals).

    Re-created here rather than imported because transformers is far too heavy for this light module; the tests
    render every registry template with transformers' own ``render_jinja_template`` and compare.
    """
    import json
    from datetime import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(jinja2.ext.Extension):
        # {% generation %}...{% endgeneration %} marks assistant text for TRL; for rendering it is a no-op.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_passthrough"), [], [], body).set_lineno(lineno)

        def _passthrough(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(jinja)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"chat template syntax error at line {e.lineno}: {e.message}") from None


# The date a run's templates print (strftime_now), pinned once per process by resolve() or pin_date(), so that
# every rendering of a training run -- masking, samples, the manifest -- shows the same day, and the Go twin can
# write that day literally.
_PINNED_DATE: Optional[str] = None


def pin_date(date: Optional[str]) -> None:
    """Pin the date (YYYY-MM-DD) ``strftime_now`` renders in this process (None: today, re-read per call)."""
    global _PINNED_DATE
    if date is not None:
        format_date(date, "%Y")  # refuses anything that is not YYYY-MM-DD
    _PINNED_DATE = date


def _strftime_now(date: Optional[str]):
    from datetime import datetime

    day = date or _PINNED_DATE
    if day is None:
        return lambda fmt: datetime.now().strftime(fmt)
    return lambda fmt: datetime.strptime(day, "%Y-%m-%d").strftime(fmt)


_TRIMS = ("| trim", "|trim", ".strip(", ".lstrip(", ".rstrip(")


def trims(jinja: str) -> bool:
    """True when the template trims some content: then kolo strips every message's content (see prepare_messages)."""
    return any(t in jinja for t in _TRIMS)


def prepare_messages(jinja: str, messages: Iterable[dict]) -> list[dict]:
    """The messages as kolo renders them with ``jinja``: THE trimming rule, applied by every renderer.

    A template that trims contents (Llama 3.x, Gemma, Mistral v3, Qwen 3, SmolLM3) cannot have a Go twin that
    trims too (Ollama's templates have no trim function). So for such templates kolo strips each message's content
    before rendering -- in training, in the proofs and in verification -- and the only difference left is a
    content with leading/trailing whitespace sent to Ollama at serving time (listed as a residual difference).
    Templates that do not trim see their contents verbatim.
    """
    if not trims(jinja):
        return [dict(m) for m in messages]
    return [dict(m, content=m["content"].strip()) if isinstance(m.get("content"), str) else dict(m)
            for m in messages]


def render(jinja: str, messages: list[dict], *, add_generation_prompt: bool = False, bos_token: str = "",
           eos_token: Optional[str] = None, date: Optional[str] = None, **extra: Any) -> str:
    """Render ``messages`` with a HF chat template. ``bos_token`` defaults to "" (see the BOS rule above).

    Contents go through :func:`prepare_messages`; ``strftime_now`` renders ``date`` (YYYY-MM-DD), else the
    process's pinned date (:func:`pin_date`), else today.
    """
    import jinja2

    kwargs: dict[str, Any] = dict(extra)
    kwargs["bos_token"] = bos_token
    kwargs.setdefault("strftime_now", _strftime_now(date))
    if eos_token is not None:
        kwargs["eos_token"] = eos_token
    try:
        return _compile(jinja).render(messages=prepare_messages(jinja, messages),
                                      add_generation_prompt=add_generation_prompt, **kwargs)
    except jinja2.TemplateError as e:
        raise TemplateError(f"chat template failed: {e}") from None
    except (TypeError, AttributeError, IndexError, KeyError) as e:  # e.g. messages[0] of an empty conversation
        raise TemplateError(f"chat template failed: {e.__class__.__name__}: {e}") from None


# ------------------------------------------------------------------------------------------------ equivalence

_S = "You are a careful assistant.\nAnswer briefly."
_U1, _A1 = "What is 2+2?", "It is 4."
_U2, _A2 = "And 3+3?", "6."
_Q = 'She said "hi" and it\'s {{ not }} {% a tag %} \\n but a backslash'
_NL = "line one\nline two\n\n  indented line\ttab"
_UNI = "Grüße, 你好, emoji 🙂, café — «quotes»"
_PAD = "  padded content with spaces  \n"

#: Conversations every equivalence check renders: with/without system, single/multi-turn, ending with the user
#: (prompt for a reply) or with the assistant (a full training example), and awkward contents.
BATTERY: tuple[tuple[dict, ...], ...] = tuple(
    tuple({"role": r, "content": c} for r, c in conv)
    for conv in (
        [("user", _U1)],
        [("system", _S), ("user", _U1)],
        [("user", _U1), ("assistant", _A1)],
        [("system", _S), ("user", _U1), ("assistant", _A1)],
        [("user", _U1), ("assistant", _A1), ("user", _U2)],
        [("system", _S), ("user", _U1), ("assistant", _A1), ("user", _U2), ("assistant", _A2)],
        [("system", _Q), ("user", _Q), ("assistant", _Q)],
        [("user", _NL), ("assistant", _NL), ("user", _UNI)],
        [("system", _UNI), ("user", _UNI), ("assistant", _UNI), ("user", _NL), ("assistant", _Q)],
        [("user", _PAD), ("assistant", _PAD)],
        [("user", _U1), ("assistant", _A1), ("user", _U2), ("assistant", _A2), ("user", _NL)],
    )
)

_REFUSED = object()  # the template raised on this conversation


def strip_bos(text: str, bos: Optional[str]) -> str:
    """``text`` without a leading literal BOS (an Ollama TEMPLATE never holds one)."""
    return text[len(bos):] if bos and text.startswith(bos) else text


def _render_for_comparison(jinja: str, messages: list[dict], agp: bool, bos_token: str,
                           eos_token: Optional[str], date: Optional[str] = None) -> str:
    # Rendered with bos_token="" and then a *literal* leading BOS removed too, so templates that hard-code it
    # ("<|begin_of_text|>...") compare equal to those using the variable.
    return strip_bos(render(jinja, messages, add_generation_prompt=agp, bos_token="", eos_token=eos_token,
                             date=date), bos_token)


def _outcomes(jinja: str, bos_token: str, eos_token: Optional[str], date: Optional[str]) -> list:
    out: list = []
    for conv in BATTERY:
        for agp in (True, False):
            try:
                out.append(_render_for_comparison(jinja, [dict(m) for m in conv], agp, bos_token, eos_token, date))
            except TemplateError:
                out.append(_REFUSED)
    return out


def match_registry(jinja: str, *, bos_token: str = "", eos_token: Optional[str] = None,
                   candidates: Optional[Iterable[str]] = None, date: Optional[str] = None) -> Optional[Template]:
    """The registry entry whose Jinja renders exactly like ``jinja`` on every :data:`BATTERY` conversation.

    Both renderings are compared as strings, with ``add_generation_prompt`` True and False and the same pinned
    ``date``; a conversation one template refuses (raise_exception) must be refused by the other too, and at least
    half of the battery must render. Equality means the registry's Go twin (proven equal to the registry's Jinja)
    is also equal to ``jinja``. Matching is by rendering only, never by model name.
    """
    mine = _outcomes(jinja, bos_token, eos_token, date)
    if sum(o is not _REFUSED for o in mine) < len(mine) // 2:
        return None
    for name in candidates or REGISTRY:
        entry = REGISTRY[name]
        theirs = _outcomes(entry.jinja, entry.bos_token, entry.eos_token, date)
        if all((a is _REFUSED and b is _REFUSED) or a == b for a, b in zip(mine, theirs)):
            return entry
    return None


def nearest_difference(jinja: str, *, bos_token: str = "", eos_token: Optional[str] = None,
                       date: Optional[str] = None) -> str:
    """Why ``jinja`` has no twin: the registry entry rendering most battery conversations alike, and the first
    conversation where they differ (for the export's warning)."""
    mine = _outcomes(jinja, bos_token, eos_token, date)
    best, best_score, best_same, first = None, (-1, -1), 0, None
    for name, entry in REGISTRY.items():
        theirs = _outcomes(entry.jinja, entry.bos_token, entry.eos_token, date)
        same = [a == b for a, b in zip(mine, theirs)]
        # Most renderings alike, then the most characters alike at the start of each (a near miss wins).
        alike = sum(len(os.path.commonprefix([a, b])) for a, b in zip(mine, theirs)
                    if isinstance(a, str) and isinstance(b, str))
        if (sum(same), alike) > best_score:
            best, best_score, best_same = name, (sum(same), alike), sum(same)
            first = same.index(False) if False in same else None
    if best is None or first is None:
        return "it renders no battery conversation"
    conv, agp = divmod(first, 2)
    a = mine[first] if mine[first] is not _REFUSED else "(refused)"
    b = _outcomes(REGISTRY[best].jinja, REGISTRY[best].bos_token, REGISTRY[best].eos_token, date)[first]
    b = b if b is not _REFUSED else "(refused)"
    at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (f"nearest registry entry {best!r} renders {best_same} of {len(mine)} test renderings alike; the first "
            f"difference is test conversation {conv + 1} (add_generation_prompt={agp == 0}) at character {at}: "
            f"{a[max(0, at - 15):at + 15]!r} vs {b[max(0, at - 15):at + 15]!r}")


def check_ollama_equivalence(jinja: str, ollama: str, *, conversations: Optional[Iterable[Iterable[dict]]] = None,
                             bos_token: str = "", eos_token: Optional[str] = None,
                             date: Optional[str] = None) -> list[str]:
    """Render each conversation with the Jinja template and with the Go template (real text/template, as Ollama
    does); return one message per difference (empty = equivalent). Needs Go (see ``gorender``).

    Both sides get the prepared messages (the trimming rule); the Jinja side prints the pinned ``date``.
    ``add_generation_prompt`` is True exactly when the conversation does not end with an assistant turn, because
    that is what Ollama's rendering means (see the module docstring). Conversations the Jinja template refuses
    (raise_exception) are not compared.
    """
    from . import gorender

    convs, want = [], []
    for c in (conversations if conversations is not None else BATTERY):
        conv = prepare_messages(jinja, c)
        agp = not conv or conv[-1]["role"] != "assistant"
        try:
            want.append(_render_for_comparison(jinja, conv, agp, bos_token, eos_token, date))
        except TemplateError:
            continue
        convs.append(conv)
    go_out = gorender.render_many(ollama, convs)
    problems = []
    for i, (got, w) in enumerate(zip(go_out, want)):
        if got != w:
            at = next((k for k, (a, b) in enumerate(zip(got, w)) if a != b), min(len(got), len(w)))
            problems.append(f"conversation {i + 1}: Go and Jinja renderings differ at character {at}: "
                            f"Go {got[max(0, at - 20):at + 20]!r} vs Jinja {w[max(0, at - 20):at + 20]!r}")
    return problems


# ------------------------------------------------------------------------------------------------ resolve


@dataclass
class ResolvedTemplate:
    """The template a run trains with, and what export needs from it.

    ``ollama`` is None when no Go template could be proven equivalent; ``proven`` says whether ``ollama`` is known
    to render like ``jinja`` (registry entries are proven by the test-suite and can be re-checked at run time).
    ``date`` is the day the template prints (pinned for the whole run); ``residual`` lists what the Go twin cannot
    reproduce (shown by the export's verification).
    """

    name: str
    jinja: str
    ollama: Optional[str]
    stop: list[str]
    proven: bool
    source: str = "registry"  # registry | model | file
    registry_match: Optional[str] = None
    special_tokens: list[str] = field(default_factory=list)
    warning: Optional[str] = None
    date: Optional[str] = None
    residual: list[str] = field(default_factory=list)
    unproven_reason: Optional[str] = None  # which check failed, when there is no twin

    def manifest(self, system: Optional[str] = None) -> dict:
        """The ``chat_template`` section of kolo.json."""
        return {"name": self.name, "jinja": self.jinja, "ollama_template": self.ollama, "stop": list(self.stop),
                "system": system, "proven": self.proven, "source": self.source,
                "registry_match": self.registry_match, "special_tokens": list(self.special_tokens),
                "date": self.date, "trim": trims(self.jinja), "residual": list(self.residual),
                "unproven_reason": self.unproven_reason}


def union_stops(*lists: Iterable[Optional[str]]) -> list[str]:
    """Every stop string once, in first-seen order (the family's first: stop[0] is the end of turn)."""
    return list(dict.fromkeys(s for lst in lists for s in lst if s))


def _proven(name: str, jinja: str, source: str, entry: Template, date: str,
            eos_token: Optional[str]) -> ResolvedTemplate:
    return ResolvedTemplate(name=name, jinja=jinja, ollama=entry.ollama_for(date),
                            stop=union_stops(entry.stop, [entry.eos_token, eos_token]), proven=True, source=source,
                            registry_match=entry.name, special_tokens=list(entry.special_tokens), date=date,
                            residual=list(entry.residual) + ([TRIM_RESIDUAL] if trims(jinja) and not any(
                                "leading/trailing whitespace" in r for r in entry.residual) else []))


TRIM_RESIDUAL = ("message contents with leading/trailing whitespace: kolo strips them in training (the template "
                 "trims), Ollama passes them through untouched")


def _from_unregistered(name: str, jinja: str, source: str, bos_token: str, eos_token: Optional[str],
                       emit_warning: bool, date: str) -> ResolvedTemplate:
    entry = match_registry(jinja, bos_token=bos_token, eos_token=eos_token, date=date)
    if entry is not None:
        return _proven(name, jinja, source, entry, date, eos_token)
    why = nearest_difference(jinja, bos_token=bos_token, eos_token=eos_token, date=date)
    warning = (f"chat template {name!r} matches no registry template on kolo's test conversations ({why}), so no "
               "equivalent Ollama TEMPLATE could be proven: the exported Modelfile will have no TEMPLATE and "
               "Ollama will choose how to prompt the model (see the export's warning). Pass --chat-template NAME "
               "to train with a registry template instead.")
    if emit_warning:
        from ..progress import emit

        emit("warning", message=warning)
    return ResolvedTemplate(name=name, jinja=jinja, ollama=None, stop=union_stops([eos_token]), proven=False,
                            source=source, warning=warning, date=date, unproven_reason=why)


def resolve(chat_template_option: str, tokenizer_chat_template: Optional[str], data_root: str | os.PathLike,
            *, bos_token: str = "", eos_token: Optional[str] = None, emit_warning: bool = True,
            date: Optional[str] = None) -> ResolvedTemplate:
    """Decide the template of a run from ``--chat-template``.

    * ``auto``: the base model's own template (``tokenizer_chat_template``), matched against the registry by
      rendering;
    * a registry name (or a vendor alias such as ``llama-3``): that entry;
    * ``*.jinja``: a file relative to the data root, matched against the registry.

    ``date`` (YYYY-MM-DD, default today) is pinned for this process (:func:`pin_date`) and recorded in the result.
    The stop list is the family's stops plus the tokenizer's ``eos_token``. When no registry entry matches, the
    result has ``ollama=None, proven=False`` and a loud warning (also emitted as a ``warning`` progress event
    unless ``emit_warning=False``). Raises OptionsError for unusable options.
    """
    from ..errors import NameError_, OptionsError
    from ..runfolder import DataRoot

    date = date or _PINNED_DATE or today()
    pin_date(date)
    opt = (chat_template_option or "auto").strip()
    if opt == "auto":
        if not tokenizer_chat_template or not isinstance(tokenizer_chat_template, str):
            raise OptionsError(["--chat-template: the base model has no chat template of its own; choose one of "
                                + ", ".join(REGISTRY) + " or a .jinja file"])
        _compile_checked(tokenizer_chat_template, "the base model's chat template")
        return _from_unregistered("auto", tokenizer_chat_template, "model", bos_token, eos_token, emit_warning, date)
    if opt.lower().endswith(".jinja"):
        try:
            path = DataRoot(data_root).resolve(opt, "--chat-template")
        except NameError_ as e:
            raise OptionsError([e.message]) from None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise OptionsError([f"--chat-template: {opt}: file not found under the data root {data_root}"]) from None
        except (OSError, UnicodeDecodeError) as e:
            raise OptionsError([f"--chat-template: {opt}: cannot read ({e.__class__.__name__}: {e})"]) from None
        _compile_checked(text, opt)
        return _from_unregistered(opt, text, "file", bos_token, eos_token, emit_warning, date)
    try:
        entry = get(opt)
    except KeyError as e:
        raise OptionsError([f"--chat-template: {e.args[0]}"]) from None
    return _proven(entry.name, entry.jinja, "registry", entry, date, eos_token)


def _compile_checked(jinja: str, what: str) -> None:
    from ..errors import OptionsError

    try:
        _compile(jinja)
    except TemplateError as e:
        raise OptionsError([f"--chat-template: {what}: {e}"]) from None
