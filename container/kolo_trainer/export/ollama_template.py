"""What the Modelfiles say about prompting: TEMPLATE, stop strings, SYSTEM and num_ctx, decided from the run's
manifest (the chat template it was trained with) and the export options.

One owner for "which Ollama TEMPLATE and stops does this model get": the export's Modelfile stage asks
:func:`settings` and writes what it returns; verification checks the same values.
"""

from __future__ import annotations

from typing import Any


def settings(ctx: Any) -> dict:
    """TEMPLATE, stop strings, num_ctx and SYSTEM for the Modelfiles, from the options and the manifest."""
    ct = ctx.data.get("chat_template") or {}
    opts = ctx.opts
    template = ct.get("ollama_template")
    proven = bool(ct.get("proven", template is not None))
    warning = None
    if template is None or not proven:
        warning = (f"chat template {ct.get('name', '?')!r}: no Ollama TEMPLATE could be proven equivalent to it, so "
                   "the Modelfiles have NO TEMPLATE; Ollama will fall back to the GGUF's own template and may prompt "
                   "the model differently from training. Train with a registry template (--chat-template NAME) to "
                   "get a verified TEMPLATE.")
        template = None
    stop = [s for s in (ct.get("stop") or []) if s]
    if opts.system is not None:
        system = opts.system or None  # --system "" means: no SYSTEM line
    else:
        system = ct.get("system") or (ctx.data.get("data") or {}).get("system")
    num_ctx = opts.num_ctx or int((ctx.data.get("options") or {}).get("max_seq_length") or 2048)
    return {"template": template, "template_name": ct.get("name"), "proven": proven and template is not None,
            "stop": stop, "system": system, "num_ctx": num_ctx, "warning": warning}
