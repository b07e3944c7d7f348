"""The chat-template registry: one entry per template family, each carrying everything training AND export need.

An entry (:class:`Template`) holds

* ``jinja``: a Hugging Face chat template (system prompt, multi-turn, ``add_generation_prompt``), used for training;
* ``ollama``: the equivalent Ollama ``TEMPLATE`` in Go text/template syntax (``.System``, ``.Messages`` with
  ``.Role``/``.Content``, as current Ollama templates are written), used in the Modelfile;
* ``stop``: every string at which generation must stop. ``stop[0]`` is THE end-of-turn string of an assistant reply
  (tiny.py makes it the tokenizer's eos; masking trains on it);
* ``special_tokens``: strings that must be single tokens in the vocabulary for the template to work as intended
  (tiny.py adds :data:`ALL_SPECIAL_TOKENS` as user-defined symbols);
* ``bos``: a note on how the beginning-of-sequence token is handled.

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

Contents are rendered verbatim (no ``| trim``): Ollama passes message contents through untouched, so a trimming
template could not be equivalent for contents with leading/trailing whitespace.

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
    "resolve", "match_registry", "check_ollama_equivalence", "TemplateError",
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

    @property
    def end_of_turn(self) -> str:
        """The string that closes an assistant reply (trained on; the tokenizer's eos in tiny models)."""
        return self.stop[0]


# ------------------------------------------------------------------------------------------------ registry
# Conventions shared by every entry below, so that the Go twin can mirror the Jinja exactly:
#   * the system prompt is messages[0] when its role is "system" (kolo's data validation guarantees at most one,
#     first); Ollama exposes it as .System and ALSO keeps it in .Messages, so Go templates that place the system
#     prompt specially skip role "system" inside the range;
#   * the Go templates remember the last role and append the generation prompt unless it was "assistant";
#   * Jinja string literals use \n escapes (HF style); Go templates use literal newlines, with {{- to trim the
#     newlines that only format the template source.

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

_LLAMA3 = Template(
    name="llama-3",
    jinja=(
        r"{{- bos_token -}}"
        r"{%- for message in messages -%}"
        r"{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' -}}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"
    ),
    ollama=(
        "{{- $last := \"\" }}\n"
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>\n"
        "{{- $last = .Role }}\n"
        "{{- end }}\n"
        "{{- if ne $last \"assistant\" }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{{ end }}"
    ),
    stop=("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"),
    special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"),
    bos="{{ bos_token }} (<|begin_of_text|> in Llama 3 tokenizers) starts the Jinja rendering; the Ollama template "
        "has none because llama.cpp adds it.",
    description="Llama 3 / 3.1 / 3.2 header-token format (without 3.1's 'Cutting Knowledge Date' preamble).",
)

_MISTRAL = Template(
    name="mistral",
    jinja=(
        r"{{- bos_token -}}"
        r"{%- if messages and messages[0]['role'] == 'system' -%}"
        r"{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
        r"{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
        r"{%- for message in loop_messages -%}"
        r"{%- if message['role'] == 'user' -%}"
        r"{%- if loop.first and system -%}{{- '[INST] ' + system + '\n\n' + message['content'] + ' [/INST]' -}}"
        r"{%- else -%}{{- '[INST] ' + message['content'] + ' [/INST]' -}}{%- endif -%}"
        r"{%- elif message['role'] == 'assistant' -%}{{- message['content'] + '</s>' -}}"
        r"{%- endif -%}"
        r"{%- endfor -%}"
    ),
    ollama=(
        "{{- $first := true }}\n"
        "{{- range .Messages }}\n"
        "{{- if eq .Role \"user\" }}[INST] {{ if and $first $.System }}{{ $.System }}\n\n"
        "{{ end }}{{ .Content }} [/INST]\n"
        "{{- $first = false }}\n"
        "{{- else if eq .Role \"assistant\" }}{{ .Content }}</s>\n"
        "{{- $first = false }}\n"
        "{{- end }}\n"
        "{{- end }}"
    ),
    stop=("</s>", "[INST]", "[/INST]"),
    special_tokens=("[INST]", "[/INST]"),
    bos="{{ bos_token }} (<s>) starts the Jinja rendering; '</s>' after each reply is the tokenizer's EOS. The "
        "prompt ends at '[/INST]' (no trailing space: a SentencePiece prompt ending in a space tokenises "
        "differently from the training text).",
    description="Mistral [INST] format; the system prompt goes into the first user turn.",
)

_GEMMA = Template(
    name="gemma",
    jinja=(
        r"{{- bos_token -}}"
        r"{%- if messages and messages[0]['role'] == 'system' -%}"
        r"{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
        r"{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
        r"{%- for message in loop_messages -%}"
        r"{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
        r"{%- if loop.first and system -%}{%- set content = system + '\n\n' + message['content'] -%}"
        r"{%- else -%}{%- set content = message['content'] -%}{%- endif -%}"
        r"{{- '<start_of_turn>' + role + '\n' + content + '<end_of_turn>\n' -}}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
    ),
    ollama=(
        "{{- $last := \"\" }}{{ $first := true }}\n"
        "{{- range .Messages }}\n"
        "{{- if ne .Role \"system\" }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}{{ .Role }}{{ end }}\n"
        "{{ if and $first $.System }}{{ $.System }}\n\n"
        "{{ end }}{{ .Content }}<end_of_turn>\n"
        "{{ $first = false }}{{ $last = .Role }}\n"
        "{{- end }}\n"
        "{{- end }}\n"
        "{{- if ne $last \"assistant\" }}<start_of_turn>model\n"
        "{{ end }}"
    ),
    stop=("<end_of_turn>", "<start_of_turn>"),
    special_tokens=("<start_of_turn>", "<end_of_turn>"),
    bos="{{ bos_token }} (<bos>) starts the Jinja rendering; none in the Ollama template.",
    description="Gemma <start_of_turn> format (Gemma 3 style: the system prompt prefixes the first user turn).",
)

_PHI3 = Template(
    name="phi-3",
    jinja=(
        r"{{- bos_token -}}"
        r"{%- for message in messages -%}"
        r"{{- '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' -}}"
        r"{%- endfor -%}"
        r"{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
    ),
    ollama=(
        "{{- $last := \"\" }}\n"
        "{{- range .Messages }}<|{{ .Role }}|>\n"
        "{{ .Content }}<|end|>\n"
        "{{ $last = .Role }}\n"
        "{{- end }}\n"
        "{{- if ne $last \"assistant\" }}<|assistant|>\n"
        "{{ end }}"
    ),
    stop=("<|end|>", "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>"),
    special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
    bos="{{ bos_token }} starts the Jinja rendering (Phi-3's tokenizer uses <s>); none in the Ollama template.",
    description="Phi-3 <|user|> ... <|end|> format.",
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

REGISTRY: dict[str, Template] = {t.name: t for t in (_LLAMA3, _CHATML, _MISTRAL, _GEMMA, _PHI3, _ALPACA)}

#: Every string any registry template needs as a single token, in a stable order (registry order, no duplicates).
ALL_SPECIAL_TOKENS: tuple[str, ...] = tuple(dict.fromkeys(t for e in REGISTRY.values() for t in e.special_tokens))


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Template:
    """The registry entry ``name`` (case-insensitive; ``llama3``/``phi3`` spellings accepted)."""
    key = name.strip().lower()
    key = {"llama3": "llama-3", "llama-3.1": "llama-3", "llama-3.2": "llama-3", "phi3": "phi-3",
           "qwen": "chatml", "qwen2": "chatml", "qwen2.5": "chatml"}.get(key, key)
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


def render(jinja: str, messages: list[dict], *, add_generation_prompt: bool = False, bos_token: str = "",
           eos_token: Optional[str] = None, **extra: Any) -> str:
    """Render ``messages`` with a HF chat template. ``bos_token`` defaults to "" (see the BOS rule above)."""
    import jinja2

    kwargs: dict[str, Any] = dict(extra)
    kwargs["bos_token"] = bos_token
    if eos_token is not None:
        kwargs["eos_token"] = eos_token
    try:
        return _compile(jinja).render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)
    except jinja2.TemplateError as e:
        raise TemplateError(f"chat template failed: {e}") from None


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
    )
)


def _strip_bos(text: str, bos: str) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def _render_for_comparison(jinja: str, messages: list[dict], agp: bool, bos_token: str,
                           eos_token: Optional[str]) -> str:
    # Rendered with bos_token="" and then a *literal* leading BOS removed too, so templates that hard-code it
    # ("<|begin_of_text|>...") compare equal to those using the variable.
    return _strip_bos(render(jinja, messages, add_generation_prompt=agp, bos_token="", eos_token=eos_token),
                      bos_token)


def match_registry(jinja: str, *, bos_token: str = "", eos_token: Optional[str] = None,
                   candidates: Optional[Iterable[str]] = None) -> Optional[Template]:
    """The registry entry whose Jinja renders exactly like ``jinja`` on every :data:`BATTERY` conversation.

    Both renderings are compared as strings, with ``add_generation_prompt`` True and False, so equality means the
    registry's Ollama template (proven equivalent to the registry's Jinja) is also equivalent to ``jinja``.
    A template that raises on any battery conversation (e.g. refuses a system role) matches nothing.
    """
    mine: list[str] = []
    try:
        for conv in BATTERY:
            for agp in (True, False):
                mine.append(_render_for_comparison(jinja, [dict(m) for m in conv], agp, bos_token, eos_token))
    except TemplateError:
        return None
    for name in candidates or REGISTRY:
        entry = REGISTRY[name]
        theirs = (_render_for_comparison(entry.jinja, [dict(m) for m in conv], agp, "", None)
                  for conv in BATTERY for agp in (True, False))
        if all(a == b for a, b in zip(mine, theirs)):
            return entry
    return None


def check_ollama_equivalence(jinja: str, ollama: str, *, conversations: Optional[Iterable[Iterable[dict]]] = None,
                             bos_token: str = "", eos_token: Optional[str] = None) -> list[str]:
    """Render each conversation with the Jinja template and with the Go template (real text/template, as Ollama
    does); return one message per difference (empty = equivalent). Needs Go (see ``gorender``).

    ``add_generation_prompt`` is True exactly when the conversation does not end with an assistant turn, because
    that is what Ollama's rendering means (see the module docstring).
    """
    from . import gorender

    convs = [[dict(m) for m in c] for c in (conversations if conversations is not None else BATTERY)]
    go_out = gorender.render_many(ollama, convs)
    problems = []
    for i, (conv, got) in enumerate(zip(convs, go_out)):
        agp = not conv or conv[-1]["role"] != "assistant"
        want = _render_for_comparison(jinja, conv, agp, bos_token, eos_token)
        if got != want:
            at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            problems.append(f"conversation {i + 1}: Go and Jinja renderings differ at character {at}: "
                            f"Go {got[max(0, at - 20):at + 20]!r} vs Jinja {want[max(0, at - 20):at + 20]!r}")
    return problems


# ------------------------------------------------------------------------------------------------ resolve


@dataclass
class ResolvedTemplate:
    """The template a run trains with, and what export needs from it.

    ``ollama`` is None when no Go template could be proven equivalent; ``proven`` says whether ``ollama`` is known
    to render like ``jinja`` (registry entries are proven by the test-suite and can be re-checked at run time).
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

    def manifest(self, system: Optional[str] = None) -> dict:
        """The ``chat_template`` section of kolo.json."""
        return {"name": self.name, "jinja": self.jinja, "ollama_template": self.ollama, "stop": list(self.stop),
                "system": system, "proven": self.proven, "source": self.source,
                "registry_match": self.registry_match}


def _from_unregistered(name: str, jinja: str, source: str, bos_token: str, eos_token: Optional[str],
                       emit_warning: bool) -> ResolvedTemplate:
    entry = match_registry(jinja, bos_token=bos_token, eos_token=eos_token)
    if entry is not None:
        return ResolvedTemplate(name=name, jinja=jinja, ollama=entry.ollama, stop=list(entry.stop), proven=True,
                                source=source, registry_match=entry.name,
                                special_tokens=list(entry.special_tokens))
    stop = [eos_token] if eos_token else []
    warning = (f"chat template {name!r} matches no registry template ({', '.join(REGISTRY)}) on kolo's test "
               "conversations, so no equivalent Ollama TEMPLATE could be proven: the exported Modelfile will have "
               "no TEMPLATE and Ollama may prompt the model differently from training. Pass --chat-template NAME "
               "to train with a registry template instead.")
    if emit_warning:
        from ..progress import emit

        emit("warning", message=warning)
    return ResolvedTemplate(name=name, jinja=jinja, ollama=None, stop=stop, proven=False, source=source,
                            warning=warning)


def resolve(chat_template_option: str, tokenizer_chat_template: Optional[str], data_root: str | os.PathLike,
            *, bos_token: str = "", eos_token: Optional[str] = None, emit_warning: bool = True) -> ResolvedTemplate:
    """Decide the template of a run from ``--chat-template``.

    * ``auto``: the base model's own template (``tokenizer_chat_template``), matched against the registry;
    * a registry name: that entry;
    * ``*.jinja``: a file relative to the data root, matched against the registry.

    When no registry entry matches, the result has ``ollama=None, proven=False`` and a loud warning (also emitted
    as a ``warning`` progress event unless ``emit_warning=False``). Raises OptionsError for unusable options.
    """
    from ..errors import NameError_, OptionsError
    from ..names import resolve_under

    opt = (chat_template_option or "auto").strip()
    if opt == "auto":
        if not tokenizer_chat_template or not isinstance(tokenizer_chat_template, str):
            raise OptionsError(["--chat-template: the base model has no chat template of its own; choose one of "
                                + ", ".join(REGISTRY) + " or a .jinja file"])
        _compile_checked(tokenizer_chat_template, "the base model's chat template")
        return _from_unregistered("auto", tokenizer_chat_template, "model", bos_token, eos_token, emit_warning)
    if opt.lower().endswith(".jinja"):
        try:
            path = resolve_under(data_root, opt, "--chat-template")
        except NameError_ as e:
            raise OptionsError([e.message]) from None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise OptionsError([f"--chat-template: {opt}: file not found under the data root {data_root}"]) from None
        except (OSError, UnicodeDecodeError) as e:
            raise OptionsError([f"--chat-template: {opt}: cannot read ({e.__class__.__name__}: {e})"]) from None
        _compile_checked(text, opt)
        return _from_unregistered(opt, text, "file", bos_token, eos_token, emit_warning)
    try:
        entry = get(opt)
    except KeyError as e:
        raise OptionsError([f"--chat-template: {e.args[0]}"]) from None
    return ResolvedTemplate(name=entry.name, jinja=entry.jinja, ollama=entry.ollama, stop=list(entry.stop),
                            proven=True, source="registry", registry_match=entry.name,
                            special_tokens=list(entry.special_tokens))


def _compile_checked(jinja: str, what: str) -> None:
    from ..errors import OptionsError

    try:
        _compile(jinja)
    except TemplateError as e:
        raise OptionsError([f"--chat-template: {what}: {e}"]) from None
