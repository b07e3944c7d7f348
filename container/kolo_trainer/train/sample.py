"""The post-training sample: a greedy reply to a prompt from the data, printed and stored in the manifest.

Greedy (no sampling) so the same weights always give the same text: the tests compare it with a trained answer,
and export's verification compares the GGUF's greedy reply with it.
"""

from __future__ import annotations

from typing import Any

from .. import templates


def pick_conversation(rows_messages: list[list[dict]], prompt: str | None,
                      system: str | None) -> tuple[list[dict], str | None]:
    """(messages up to and including the first user turn, the assistant reply that followed it in the data)."""
    if prompt is not None:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return msgs, None
    for msgs in rows_messages:
        for i, m in enumerate(msgs):
            if m.get("role") == "user":
                nxt = msgs[i + 1] if i + 1 < len(msgs) else None
                expected = nxt["content"] if nxt and nxt.get("role") == "assistant" else None
                return [dict(x) for x in msgs[: i + 1]], expected
    return [], None


def encode_prompt(tokenizer: Any, jinja: str, messages: list[dict]) -> list[int]:
    """Render with the generation prompt and tokenise like training does (one BOS, never two)."""
    bos = getattr(tokenizer, "bos_token", None) or ""
    text = templates.render(jinja, messages, add_generation_prompt=True, bos_token=bos,
                            eos_token=getattr(tokenizer, "eos_token", None))
    from ..masking import bos_id_to_add

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos_id = bos_id_to_add(tokenizer, text)  # masking's rule: what the tokenizer does, not its add_bos_token flag
    return [bos_id] + ids if bos_id is not None and (not ids or ids[0] != bos_id) else ids


def stop_token_ids(tokenizer: Any, stop: list[str]) -> list[int]:
    """Token ids of the stop strings that are single tokens, plus eos."""
    out = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        out.append(int(tokenizer.eos_token_id))
    for s in stop:
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] not in out:
            out.append(int(ids[0]))
    return out


def generate(model: Any, tokenizer: Any, jinja: str, stop: list[str], messages: list[dict],
             max_new_tokens: int = 96) -> str:
    import torch

    ids = encode_prompt(tokenizer, jinja, messages)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    eos = stop_token_ids(tokenizer, stop)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                             pad_token_id=pad)
    text = tokenizer.decode(out[0][len(ids):], skip_special_tokens=True)
    for s in stop:  # multi-token stop strings are cut here
        if s and s in text:
            text = text[: text.index(s)]
    return text.strip()
