"""What the Modelfiles say about prompting: TEMPLATE, stop strings, SYSTEM and num_ctx, decided from the run's
manifest (the chat template it was trained with) and the export options.

One owner for "which Ollama TEMPLATE and stops does this model get": the export's Modelfile stage asks
:func:`settings` and writes what it returns; verification checks the same values and lists ``residual``.

How Ollama chooses a prompt format (github:ollama/ollama, read for this module: server/images.go, server/model.go,
template/template.go, server/routes.go):

* a Modelfile TEMPLATE is used as the Go template, EXCEPT that current Ollama renders the GGUF's own Jinja
  ``tokenizer.chat_template`` instead when that Jinja advertises more capabilities (tools: it mentions "tools" or
  "tool_call"; thinking: "<think>" and "</think>") than the TEMPLATE does (``shouldPreferChatTemplate``), unless
  the server runs with ``OLLAMA_GO_TEMPLATE`` set;
* without TEMPLATE, Ollama takes the template of its built-in index nearest to the GGUF's Jinja by edit distance
  (``template.Named``, distance < 100) or else ``{{ .Prompt }}`` (raw text, no chat markup) -- the only choices
  of Ollama up to 0.24 -- and current Ollama also renders the GGUF's Jinja natively;
* a Modelfile ``PARAMETER stop`` list REPLACES the stops Ollama would have taken from its index template, so kolo
  writes a stop list only when it is the family's full list, never just the bare EOS.
"""

from __future__ import annotations

from typing import Any, Optional

_NO_TWIN = (
    "chat template {name!r}: no Ollama TEMPLATE could be proven equal to it ({why}), so the Modelfiles have NO "
    "TEMPLATE and NO stop lines (a stop list would replace the stops Ollama detects). What Ollama then does depends "
    "on its version: current Ollama renders the GGUF's own Jinja chat template natively when that template mentions "
    "tools or thinking, and otherwise picks the nearest template of its built-in index (edit distance < 100) or "
    "falls back to '{{{{ .Prompt }}}}' (raw text, no chat markup); Ollama up to 0.24 only has the index match and "
    "the '{{{{ .Prompt }}}}' fallback. Either may prompt the model differently from training. Run `kolo "
    "ollama-install` (its smoke prompt is the final word), or re-train with a registry template "
    "(--chat-template NAME) to get a proven TEMPLATE.")


def jinja_capabilities(jinja: str) -> set[str]:
    """The capabilities Ollama reads from a GGUF's Jinja chat template (server/images.go's string tests)."""
    caps = set()
    if "tools" in jinja or "tool_call" in jinja:
        caps.add("tools")
    if ("<think>" in jinja and "</think>" in jinja) or (
            ("content.split('</think>')" in jinja or 'content.split("</think>")' in jinja)
            and "reasoning_content" not in jinja and "<SPECIAL_12>" not in jinja):
        caps.add("thinking")
    return caps


def go_capabilities(template: str, thinking: bool) -> set[str]:
    """The capabilities Ollama reads from a Go TEMPLATE (``thinking``: from gorender.thinking_capability)."""
    caps = {"tools"} if ".Tools" in template else set()
    return caps | ({"thinking"} if thinking else set())


def gguf_template_note(jinja: str, template: str, thinking: bool) -> Optional[str]:
    """The residual difference when current Ollama would render the GGUF's Jinja instead of ``template``."""
    mine, theirs = go_capabilities(template, thinking), jinja_capabilities(jinja)
    if len(theirs) <= len(mine):
        return None
    return ("current Ollama renders the GGUF's own Jinja chat template instead of this TEMPLATE, because the Jinja "
            f"advertises {', '.join(sorted(theirs))} and the TEMPLATE {', '.join(sorted(mine)) or 'nothing'} "
            "(server/images.go shouldPreferChatTemplate; OLLAMA_GO_TEMPLATE=1 keeps the TEMPLATE): that is the "
            "training template itself, except that it prints today's date where training pinned one and sees "
            "contents unstripped; Ollama up to 0.24 and servers with OLLAMA_GO_TEMPLATE use this TEMPLATE")


def settings(ctx: Any) -> dict:
    """TEMPLATE, stop strings, num_ctx, SYSTEM and the residual differences, from the options and the manifest."""
    ct = ctx.data.get("chat_template") or {}
    opts = ctx.opts
    template = ct.get("ollama_template")
    proven = bool(ct.get("proven", template is not None))
    warning = None
    stop = [s for s in (ct.get("stop") or []) if s]
    if template is None or not proven:
        why = ("it matches no registry template on kolo's test conversations"
               + (f": {ct['unproven_reason']}" if ct.get("unproven_reason") else "")
               if ct.get("source") != "registry" else "the manifest records no proven TEMPLATE")
        warning = _NO_TWIN.format(name=ct.get("name", "?"), why=why)
        template, stop = None, []
    if opts.system is not None:
        system = opts.system or None  # --system "" means: no SYSTEM line
    else:
        system = ct.get("system") or (ctx.data.get("data") or {}).get("system")
    num_ctx = opts.num_ctx or int((ctx.data.get("options") or {}).get("max_seq_length") or 2048)
    return {"template": template, "template_name": ct.get("name"), "proven": proven and template is not None,
            "stop": stop, "system": system, "num_ctx": num_ctx, "warning": warning,
            "date": ct.get("date"), "residual": list(ct.get("residual") or []) if template else []}
