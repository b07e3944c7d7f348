"""Tokenise a conversation with loss on the assistant replies only, for ANY chat template (no {% generation %}).

What is trained
---------------
For each assistant message ``i`` the template is rendered twice:

    prompt_i = render(messages[:i],   add_generation_prompt=True)    # everything up to "assistant, go"
    turn_i   = render(messages[:i+1], add_generation_prompt=False)   # ... plus the reply

The reply's segment is ``turn_i[len(prompt_i):]``: exactly what the model has to generate after the generation
prompt (the content, the end-of-turn string such as ``<|im_end|>`` / ``<|eot_id|>`` / ``</s>``, and whatever the
template writes in between). Whitespace AFTER the end-of-turn marker (chatml's ``"\\n"`` after ``<|im_end|>``,
alpaca's ``"\\n\\n"``) is NOT trained: generation stops at the marker, so the model never writes it. When the
template ends a reply with whitespace only (no marker), that whitespace is the terminator and is trained. If a
template ignores ``add_generation_prompt``, the assistant header it writes becomes part of the segment, which is
right: the model must then produce the header itself.

Each segment is located in the full rendering (``render(messages)``), normally by position (the prefix property
``prompt_i`` ⊂ ``turn_i`` ⊂ full holds for ordinary templates); for templates that re-render earlier turns
differently, by searching for the segment text in order. A reply that cannot be located raises
:class:`~kolo_trainer.errors.DataError` instead of silently training on the wrong tokens.

Tokens: the full text is tokenised ONCE (fast tokenizer, ``return_offsets_mapping``), so the ids are exactly the
ids of the whole conversation (no boundary artefacts), and a token is trained when its character span overlaps a
trained segment. A token straddling a boundary (SentencePiece ``"▁Hello"`` whose ``▁`` stands for the preceding
space) is trained: the model must emit it to write the reply. Slow tokenizers without offsets are tokenised
segment by segment instead.

BOS: the template is rendered with the tokenizer's real ``bos_token``; the text is tokenised with
``add_special_tokens=False``; a BOS id is prepended only when the tokenizer normally adds one and the text does not
already start with it — the same single BOS llama.cpp/Ollama use (see ``templates`` for the rule).

Text rows (``[{"role": "text"}]`` from ``data``'s text format) are tokenised as BOS + text + EOS with no template,
and every token is trained.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import DataError, OptionsError

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    n_trained: int
    text: str = ""  # the rendered conversation (with BOS if the template renders one)
    spans: list[tuple[int, int]] = field(default_factory=list)  # trained character spans of ``text``
    offsets: Optional[list[tuple[int, int]]] = None  # per token, into ``text`` (None for a prepended BOS: (0, 0))


def _special_kwargs(tokenizer: Any) -> dict[str, str]:
    out = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, str):
            out[name] = v
    out.setdefault("bos_token", "")
    return out


def _trained_part(segment: str, content: str) -> str:
    """``segment`` without the whitespace that follows its end-of-turn marker (see the module docstring)."""
    k = segment.find(content) if content else -1
    if k >= 0:
        end = k + len(content)
        tail = segment[end:]
        if not tail.strip():
            return segment  # no marker after the content: the (whitespace) tail is the terminator
        return segment[:end] + tail.rstrip()
    stripped = segment.rstrip()
    return stripped or segment


def assistant_spans(jinja: str, messages: list[dict], **render_kwargs: Any) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering of ``messages`` and the character spans to train on (one per assistant message).

    Messages go through ``templates.prepare_messages`` first (the trimming rule), so contents are searched as
    the template renders them.
    """
    from .templates import TemplateError, prepare_messages, render

    messages = prepare_messages(jinja, messages)

    def r(msgs: list[dict], agp: bool) -> str:
        try:
            return render(jinja, msgs, add_generation_prompt=agp, **render_kwargs)
        except TemplateError as e:
            raise DataError([f"the chat template cannot render this conversation: {e}"]) from None

    full = r(messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = r(messages[:i], True)
        turn = full if i == len(messages) - 1 else r(messages[: i + 1], False)
        if turn.startswith(prompt):
            start = len(prompt)
        else:  # the template re-renders earlier turns once the reply exists: fall back to the reply's text
            start = turn.rfind(m["content"]) if m["content"] else -1
            if start < 0:
                raise DataError([f"cannot locate assistant message {i + 1} in the rendered conversation: the chat "
                                 "template rewrites it; use --chat-template NAME with a registry template"])
        part = _trained_part(turn[start:], m["content"])
        if not part:
            continue
        span = _locate(full, cursor, turn, start, part, prompt, m["content"])
        if span is None:
            raise DataError([f"cannot locate assistant message {i + 1} in the rendered conversation: the "
                             "template renders it differently in context; use --chat-template NAME"])
        spans.append(span)
        cursor = span[1]
    return full, spans


def _locate(full: str, cursor: int, turn: str, start: int, part: str, prompt: str,
            content: str) -> Optional[tuple[int, int]]:
    """Where the reply ``part`` (as rendered when it is the last turn) sits in the full conversation.

    Templates that render past turns differently (Qwen 3 drops the <think> block of earlier replies; Phi-3.5 ends
    a finished conversation with eos) do not contain ``part`` verbatim: then the reply starts where its
    generation prompt ends (or at its content), and ends after its content plus as much of its end-of-turn
    marker as the full text has (whitespace after the marker excluded, as in :func:`_trained_part`).
    """
    if start >= cursor and full.startswith(turn[: start + len(part)]):
        return start, start + len(part)
    k = full.find(part, cursor)
    if k >= 0:
        return k, k + len(part)
    if not content:
        return None
    begin = len(prompt) if len(prompt) >= cursor and full.startswith(prompt) else full.find(content, cursor)
    c = full.find(content, max(begin, cursor)) if begin >= 0 else -1
    if c < 0:
        return None
    end = c + len(content)
    marker = part[part.find(content) + len(content):] if content in part else ""
    n = 0
    while n < len(marker) and end + n < len(full) and full[end + n] == marker[n]:
        n += 1
    ext = marker[:n]
    if n < len(marker):  # only whole pieces of the marker: "<|end|>\n<|endoftext|>" vs "<|end|>\n<|user|>"
        cut = max(ext.rfind(ch) for ch in " \t\n")
        ext = ext[:cut] if cut >= 0 else ""
    return begin, end + len(ext.rstrip())


def bos_id_to_add(tokenizer: Any, text: str) -> Optional[int]:
    """The BOS id to put before ``text`` (None when the text has one or the tokenizer adds none): one rule for
    training, the post-training sample and verification."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    bos = getattr(tokenizer, "bos_token", None)
    if bos_id is None or not bos:
        return None
    if text.startswith(bos):
        return None
    # Ask the tokenizer what it does (its add_bos_token attribute can disagree with its post-processor, e.g. a
    # transformers-5 save of a SentencePiece tokenizer): the behaviour is what llama.cpp's converter copies.
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos_id if ids and ids[0] == bos_id else None


def _tokenise(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` and each token's character span."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    # Slow tokenizer: no offsets. Tokenise the pieces between span boundaries separately (exact labels; ids may
    # differ from whole-text tokenisation at the boundaries).
    cuts = sorted({0, len(text), *[b for s in spans for b in s]})
    ids: list[int] = []
    offs: list[tuple[int, int]] = []
    for a, b in zip(cuts, cuts[1:]):
        if a == b:
            continue
        piece = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
        ids += piece
        offs += [(a, b)] * len(piece)
    return ids, offs


def encode(tokenizer: Any, messages: list[dict], jinja: str, *, train_on_inputs: bool = False,
           max_length: Optional[int] = None, date: Optional[str] = None) -> Encoded:
    """Token ids and labels (-100 = not trained) for one conversation rendered with ``jinja``.

    ``date`` (YYYY-MM-DD) is what ``strftime_now`` renders; None means the date the run pinned
    (``templates.resolve`` pins it for the process), else today.
    """
    if len(messages) == 1 and messages[0]["role"] == "text":
        return _encode_text(tokenizer, messages[0]["content"], max_length)
    text, spans = assistant_spans(jinja, messages, date=date, **_special_kwargs(tokenizer))
    ids, offsets = _tokenise(tokenizer, text, spans)
    labels = [IGNORE] * len(ids)
    if train_on_inputs:
        labels = list(ids)
    else:
        # Offsets are sorted; spans are sorted and disjoint: one merge pass.
        j = 0
        for t, (a, b) in enumerate(offsets):
            while j < len(spans) and spans[j][1] <= a:
                j += 1
            if j == len(spans):
                break
            s, e = spans[j]
            if b > s and a < e and b > a:
                labels[t] = ids[t]
    bos = bos_id_to_add(tokenizer, text)
    if bos is not None:
        ids.insert(0, bos)
        labels.insert(0, IGNORE)
        offsets.insert(0, (0, 0))
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels, offsets = ids[:max_length], labels[:max_length], offsets[:max_length]
    return Encoded(ids, labels, truncated, sum(1 for x in labels if x != IGNORE), text, spans, offsets)


def _encode_text(tokenizer: Any, text: str, max_length: Optional[int]) -> Encoded:
    ids, offsets = _tokenise(tokenizer, text, [(0, len(text))])
    bos = bos_id_to_add(tokenizer, text)
    if bos is not None:
        ids.insert(0, bos)
        offsets.insert(0, (0, 0))
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if eos_id is not None:
        ids.append(eos_id)
        offsets.append((len(text), len(text)))
    labels = list(ids)
    if bos is not None:
        labels[0] = IGNORE
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels, offsets = ids[:max_length], labels[:max_length], offsets[:max_length]
    return Encoded(ids, labels, truncated, sum(1 for x in labels if x != IGNORE), text, [(0, len(text))], offsets)


# ------------------------------------------------------------------------------------------------ preview


def load_tokenizer(base_model: str, data_root: Optional[str]) -> Any:
    """A tokenizer from a model folder under the data root, or a Hugging Face id (local cache first)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    local = None
    if data_root and not os.path.isabs(base_model):
        from .runfolder import DataRoot

        candidate = DataRoot(data_root).resolve(base_model, "--base-model")
        if candidate.is_dir():
            local = candidate
        elif (Path(data_root) / base_model.replace("\\", "/").split("/")[0]).is_dir():
            # "models/x" names a folder of the data root, not a Hub id: say so now instead of retrying the Hub.
            raise OptionsError([f"--base-model {base_model!r}: no such model folder under the data root "
                                f"{data_root}"], hint="list the models with `kolo list` or build the demo model "
                               "with `python -m kolo_trainer make-tiny-model`")
    name = str(local) if local else base_model
    try:
        try:
            return AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:
            if local or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise
            return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # transformers raises OSError/ValueError/HF errors with long texts
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise OptionsError([f"--base-model {base_model!r}: cannot load its tokenizer ({first})"],
                           hint="give a model folder relative to the data root (e.g. models/tiny) or a Hugging "
                                "Face id that is in the local cache") from None


def trained_runs(enc: Encoded) -> list[tuple[str, bool]]:
    """``enc.text`` cut into (text, trained) runs, from the trained tokens' character spans."""
    trained = [False] * len(enc.text)
    for t, (a, b) in enumerate(enc.offsets or []):
        if enc.labels[t] != IGNORE:
            for k in range(a, min(b, len(trained))):
                trained[k] = True
    runs: list[tuple[str, bool]] = []
    start = 0
    for k in range(1, len(trained) + 1):
        if k == len(trained) or trained[k] != trained[start]:
            runs.append((enc.text[start:k], trained[start]))
            start = k
    return runs


def _highlight(enc: Encoded, style: str) -> str:
    """The rendered text with trained tokens marked: ANSI colours, or [[...]] brackets."""
    on, off = ("\x1b[1;32m", "\x1b[0m") if style == "ansi" else ("[[", "]]")
    return "".join(on + t + off if tr else t for t, tr in trained_runs(enc))


def preview_main(argv: list[str]) -> int:
    """``python -m kolo_trainer preview FILE --base-model M [--chat-template T] --data-root ROOT``."""
    from . import data, templates
    from .spec import _Parser

    ap = _Parser(prog="kolo_trainer preview", description="Show one rendered example with the trained tokens marked.")
    ap.add_argument("file", help="training file, relative to the data root")
    ap.add_argument("--base-model", required=True, help="model folder under the data root, or a Hugging Face id")
    ap.add_argument("--chat-template", default="auto")
    ap.add_argument("--data-root", default=os.environ.get("KOLO_DATA"))
    ap.add_argument("--data-format", "--format", dest="data_format", default="auto", choices=data.FORMATS)
    ap.add_argument("--row", type=int, default=1, help="which valid row to show (1 = the first)")
    ap.add_argument("--train-on-inputs", action="store_true")
    ap.add_argument("--max-seq-length", type=int, default=None)
    ap.add_argument("--style", choices=("auto", "rich", "ansi", "brackets"), default="auto")
    args = ap.parse_args(argv)
    if not args.data_root:
        raise OptionsError(["--data-root: required (or set KOLO_DATA)"])
    from .runfolder import DataRoot

    path = DataRoot(args.data_root).resolve(args.file, "data file")
    res = data.load(path, args.data_format, display_name=args.file)
    if not res.rows:
        data.raise_if_invalid(res, skip_invalid=True)  # raises: nothing valid to show
    if not 1 <= args.row <= len(res.rows):
        raise OptionsError([f"--row: must be between 1 and {len(res.rows)} (the valid rows of {args.file})"])
    row = res.rows[args.row - 1]
    tok = load_tokenizer(args.base_model, args.data_root)
    resolved = templates.resolve(args.chat_template, getattr(tok, "chat_template", None), args.data_root,
                                 bos_token=tok.bos_token or "", eos_token=tok.eos_token, emit_warning=False)
    enc = encode(tok, row.messages, resolved.jinja, train_on_inputs=args.train_on_inputs,
                 max_length=args.max_seq_length)
    style = args.style
    if style == "auto":
        style = "rich" if sys.stdout.isatty() else "brackets"
    head = (f"{args.file}:{row.line} rendered with chat template {resolved.name!r}"
            + (f" (= registry {resolved.registry_match})" if resolved.registry_match and
               resolved.registry_match != resolved.name else ""))
    legend = "trained tokens are highlighted" if style in ("rich", "ansi") else "trained tokens are inside [[ ]]"
    summary = (f"{len(enc.input_ids)} tokens, {enc.n_trained} trained"
               + (", TRUNCATED to --max-seq-length" if enc.truncated else ""))
    if style == "rich":
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:
            style = "ansi"
        else:
            t = Text()
            for piece, tr in trained_runs(enc):
                t.append(piece, style="bold black on green" if tr else "dim")
            con = Console()
            con.print(head + f" — {legend}:", markup=False)
            con.print(t)
            con.print(summary, markup=False)
            if resolved.warning:
                con.print("warning: " + resolved.warning, markup=False)
            return 0
    print(head + f" — {legend}:")
    print(_highlight(enc, style))
    print(summary)
    if resolved.warning:
        print("warning: " + resolved.warning)
    return 0


__all__ = ["Encoded", "IGNORE", "encode", "assistant_spans", "load_tokenizer", "preview_main", "trained_runs"]
