"""``python -m kolo_trainer chat --output-dir RUN [--quantization Q] [--prompt TEXT]``: talk to an exported GGUF.

It behaves like Ollama would with the run's Modelfile, without Ollama: the Modelfile is read back with the same
parser port export verifies with, the prompt is the Modelfile TEMPLATE rendered with Go's text/template (the real
Ollama rendering, when Go is installed) or else with the training chat template that export verified it against,
the Modelfile SYSTEM applies when the conversation brings none, and the answer stops at the end-of-generation token
or at any of the Modelfile's stop strings.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import spec, templates
from ..errors import ExportError, OptionsError
from ..options import QUANTIZATIONS, ChatOptions
from ..runfolder import DataRoot, Run


@dataclass
class Exported:
    """The files one quantisation of an exported run is chatted with, each checked to exist."""

    quant: str
    modelfile_path: Path
    mf: Any  # modelfile.Modelfile
    gguf: Path
    adapter: Optional[Path]
    data: dict  # the run's manifest


def default_quant(modelfiles: dict) -> str:
    """Q4_K_M when it was exported, else the smallest exported quantisation."""
    if "Q4_K_M" in modelfiles:
        return "Q4_K_M"
    for q in reversed(QUANTIZATIONS):
        if q in modelfiles:
            return q
    return "Q4_K_M"


def exported(run: Run, quant: Optional[str]) -> Exported:
    """The Modelfile and GGUF(s) of ``quant`` (default: :func:`default_quant`) of ``run``, or one clear error
    naming what is missing and the ``kolo export`` that writes it again. Light: the host checks with it too."""
    from . import modelfile

    data = run.require(finished=True, verb="chat with", error=ExportError)
    exp = data.get("export") or {}
    mfs = exp.get("modelfiles") or {}
    if not mfs:
        status = exp.get("status")
        why = f"its last export did not finish (status: {status})" if status and status != "finished" \
            else "it has not been exported yet"
        raise ExportError(f"cannot chat with {run.label}: {why}", hint=f"run `kolo export {run.name}` first")
    q = quant or default_quant(mfs)
    if q not in mfs:
        raise OptionsError([f"--quantization: {q} was not exported for {run.label} (exported: {', '.join(mfs)})"],
                           hint=f"run `kolo export {run.name} --quantization {q}`, or pick an exported one")
    fix = f"run `kolo export {run.name} --quantization {q}` to write it again"
    mf_path = _exported_file(run, str(Path(mfs[q])), "the Modelfile", fix)
    mf = modelfile.parse(mf_path.read_text(encoding="utf-8"), source=f"{run.label}/{mfs[q]}")
    gguf = _exported_file(run, _beside(mf_path, run, mf.from_), f"the GGUF that {mfs[q]} names (FROM)", fix)
    adapter = _exported_file(run, _beside(mf_path, run, mf.adapter), f"the LoRA GGUF that {mfs[q]} names "
                             "(ADAPTER)", fix) if mf.adapter else None
    return Exported(q, mf_path, mf, gguf, adapter, data)


def _beside(mf_path: Path, run: Run, name: str) -> str:
    """A Modelfile's FROM/ADAPTER path, relative to the run folder (it is relative to the Modelfile's folder)."""
    return os.path.relpath(os.path.normpath(mf_path.parent / name), run.path)


def _exported_file(run: Run, rel: str, what: str, fix: str) -> Path:
    p = run.path / rel
    real = Path(os.path.realpath(p))
    if rel.startswith("..") or os.path.isabs(rel) or run.path.resolve() not in real.parents:
        raise ExportError(f"{what} {run.label}/{rel} is outside the run folder", hint=fix)
    if not real.is_file():
        raise ExportError(f"{what} {run.label}/{rel} is missing", hint=fix)
    return real


class Session:
    """One chat: the GGUF, its Modelfile settings and the conversation so far."""

    def __init__(self, files: Exported, temperature: Optional[float] = None):
        self.mf = files.mf
        self.stops = list(self.mf.parameters.get("stop", []))
        self.num_ctx = int((self.mf.parameters.get("num_ctx") or ["2048"])[-1])
        self.temperature = temperature if temperature is not None else \
            float((self.mf.parameters.get("temperature") or ["0.8"])[-1])
        self.top_p = float((self.mf.parameters.get("top_p") or ["0.9"])[-1])
        self.jinja = (files.data.get("chat_template") or {}).get("jinja")
        self.messages: list[dict] = []
        from ..templates import gorender

        self.use_go = self.mf.template is not None and gorender.available()
        if self.mf.template is None and not self.jinja:
            raise ExportError("this run has neither a Modelfile TEMPLATE nor a chat template to format prompts with")
        import llama_cpp

        kwargs: dict[str, Any] = dict(model_path=str(files.gguf), n_ctx=self.num_ctx, verbose=False, seed=0,
                                      n_threads=max(1, min(8, os.cpu_count() or 1)))
        if files.adapter is not None:
            kwargs["lora_path"] = str(files.adapter)
        self.llm = llama_cpp.Llama(**kwargs)
        self.bos_text = self.llm.detokenize([self.llm.token_bos()], special=True).decode("utf-8", "replace") \
            if self.llm.token_bos() >= 0 else ""

    def prompt_text(self) -> str:
        """The conversation rendered as Ollama renders it with this Modelfile."""
        if self.use_go:
            from ..templates import gorender

            return gorender.render(self.mf.template or "", self.messages, system=self.mf.system)
        msgs = self.messages
        if self.mf.system and (not msgs or msgs[0]["role"] != "system"):
            msgs = [{"role": "system", "content": self.mf.system}] + msgs
        text = templates.render(self.jinja or "", msgs, add_generation_prompt=True, bos_token="")
        # An Ollama prompt never contains BOS: llama.cpp adds it when tokenising.
        return text[len(self.bos_text):] if self.bos_text and text.startswith(self.bos_text) else text

    def ask(self, text: str, max_tokens: int = 256, out: Any = None) -> str:
        """Add a user turn, stream the answer to ``out`` (if given), return it and keep it in the history."""
        import llama_cpp

        self.messages.append({"role": "user", "content": text})
        ids = self.llm.tokenize(self.prompt_text().encode("utf-8"), add_bos=True, special=True)
        if len(ids) >= self.num_ctx:
            raise ExportError(f"the conversation is {len(ids)} tokens, longer than num_ctx {self.num_ctx}")
        try:
            vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        except (AttributeError, TypeError):  # older bindings: end at eos only
            vocab = None
        raw = b""
        shown = 0
        answer = ""
        greedy = self.temperature <= 0
        gen = self.llm.generate(ids, temp=max(self.temperature, 0.0), top_k=1 if greedy else 40,
                                top_p=1.0 if greedy else self.top_p, repeat_penalty=1.0, reset=True)
        for n, t in enumerate(gen):
            if (vocab is not None and llama_cpp.llama_vocab_is_eog(vocab, t)) or t == self.llm.token_eos():
                break
            raw += self.llm.detokenize([t], special=True)
            answer = raw.decode("utf-8", "ignore")
            cut = min((answer.find(s) for s in self.stops if s in answer), default=-1)
            if cut >= 0:
                answer = answer[:cut]
                break
            # Hold back a tail that could still become a stop string.
            hold = max((k for s in self.stops for k in range(1, len(s)) if answer.endswith(s[:k])), default=0)
            if out is not None and len(answer) - hold > shown:
                out.write(answer[shown:len(answer) - hold])
                out.flush()
                shown = len(answer) - hold
            if n + 1 >= max_tokens:
                break
        if out is not None and len(answer) > shown:
            out.write(answer[shown:])
            out.flush()
        self.messages.append({"role": "assistant", "content": answer})
        return answer


def run(argv: list[str]) -> int:
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _explicit = spec.parse_argv(ChatOptions, rest, prog="python -m kolo_trainer chat")
    assert isinstance(opts, ChatOptions)
    run = DataRoot(root_s).check().run(opts.output_dir, "output dir")
    s = Session(exported(run, opts.quantization), opts.temperature)
    if opts.prompt is not None:
        s.ask(opts.prompt, opts.max_tokens, out=sys.stdout)
        print()
        return 0
    print(f"chatting with {s.mf.from_} (Ctrl-D or /bye to end)", file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip() in ("/bye", "/exit", "/quit"):
            return 0
        if not line.strip():
            continue
        s.ask(line, opts.max_tokens, out=sys.stdout)
        print()


# ------------------------------------------------------------------------------------------------ JSON lines


class _JsonLines:
    """A ``Session.ask`` output that writes each streamed piece as one JSON line ``{"token": "..."}``."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        if text:
            self.stream.write(json.dumps({"token": text}, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _conversation(text: str) -> tuple[list[dict], Optional[str]]:
    """The request line: ``{"messages": [{role, content}...] ending with the user's turn, "system": str|null}``."""
    try:
        req = json.loads(text)
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in req["messages"]]
    except (ValueError, KeyError, TypeError):
        raise OptionsError(["the request is not {\"messages\": [{\"role\", \"content\"}, ...], \"system\"?}"]) from None
    if not msgs or msgs[-1]["role"] != "user" or any(m["role"] not in ("user", "assistant") for m in msgs):
        raise OptionsError(["the messages must be user/assistant turns ending with the user's"])
    system = req.get("system")
    return msgs, (str(system) if system not in (None, "") else None)


def stream_main(argv: list[str]) -> int:
    """``python -m kolo_trainer chat-stream --output-dir RUN [--quantization Q] [--temperature N] [--max-tokens N]``:
    one answer for ``kolo chat --web``. Reads one conversation as JSON from stdin, writes ``{"ready", "quantization"}``,
    then ``{"token"}`` lines as the answer streams (held back where a stop string may be starting, cut at one),
    then ``{"done": true, "answer"}``. Errors go the usual way (``error:`` on stderr, the exit code)."""
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _explicit = spec.parse_argv(ChatOptions, rest, prog="python -m kolo_trainer chat-stream")
    assert isinstance(opts, ChatOptions)
    msgs, system = _conversation(sys.stdin.readline())
    run = DataRoot(root_s).check().run(opts.output_dir, "output dir")
    files = exported(run, opts.quantization)
    s = Session(files, opts.temperature)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "quantization": files.quant}) + "\n")
    out.flush()
    # A system prompt of the conversation's own replaces the Modelfile's SYSTEM, as in an Ollama chat request.
    s.messages = ([{"role": "system", "content": system}] if system else []) + msgs[:-1]
    answer = s.ask(msgs[-1]["content"], opts.max_tokens, out=_JsonLines(out))
    out.write(json.dumps({"done": True, "answer": answer}, ensure_ascii=False) + "\n")
    out.flush()
    return 0
