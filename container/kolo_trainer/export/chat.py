"""``python -m kolo_trainer chat --output-dir RUN [--quantization Q] [--prompt TEXT]``: talk to an exported GGUF.

It behaves like Ollama would with the run's Modelfile, without Ollama: the Modelfile is read back with the same
parser port export verifies with, the prompt is the Modelfile TEMPLATE rendered with Go's text/template (the real
Ollama rendering, when Go is installed) or else with the training chat template that export verified it against,
the Modelfile SYSTEM applies when the conversation brings none, and the answer stops at the end-of-generation token
or at any of the Modelfile's stop strings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .. import manifest, names, templates
from ..errors import ExportError, OptionsError
from ..options import QUANTIZATIONS


def _parser() -> argparse.ArgumentParser:
    class P(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise OptionsError([message])

    p = P(prog="python -m kolo_trainer chat")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--quantization")
    p.add_argument("--prompt")
    p.add_argument("--temperature", type=float)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--data-root", default=os.environ.get("KOLO_DATA", "./kolo_data"))
    return p


class Session:
    """One chat: the GGUF, its Modelfile settings and the conversation so far."""

    def __init__(self, run_dir: Path, quant: str, temperature: Optional[float] = None):
        from . import modelfile

        data = manifest.load(run_dir)
        exp = data.get("export") or {}
        mfs = exp.get("modelfiles") or {}
        if not mfs:
            raise ExportError(f"run {run_dir.name!r} has not been exported yet",
                              f"run `kolo export {run_dir.name}` first")
        if quant not in mfs:
            raise OptionsError([f"--quantization: {quant} was not exported for this run (exported: "
                                f"{', '.join(mfs)}); run `kolo export {run_dir.name} --quantization {quant}`"])
        mf_path = run_dir / mfs[quant]
        self.mf = modelfile.parse(mf_path.read_text(encoding="utf-8"))
        gguf = (mf_path.parent / self.mf.from_).resolve()
        if not gguf.is_file():
            raise ExportError(f"{mf_path}: FROM {self.mf.from_} does not exist", f"run `kolo export {run_dir.name}`")
        adapter = (mf_path.parent / self.mf.adapter).resolve() if self.mf.adapter else None
        self.stops = list(self.mf.parameters.get("stop", []))
        self.num_ctx = int((self.mf.parameters.get("num_ctx") or ["2048"])[-1])
        self.temperature = temperature if temperature is not None else \
            float((self.mf.parameters.get("temperature") or ["0.8"])[-1])
        self.top_p = float((self.mf.parameters.get("top_p") or ["0.9"])[-1])
        ct = data.get("chat_template") or {}
        self.jinja = ct.get("jinja")
        self.messages: list[dict] = []
        from ..templates import gorender

        self.use_go = self.mf.template is not None and gorender.available()
        if self.mf.template is None and not self.jinja:
            raise ExportError("this run has neither a Modelfile TEMPLATE nor a chat template to format prompts with")
        import llama_cpp

        kwargs: dict[str, Any] = dict(model_path=str(gguf), n_ctx=self.num_ctx, verbose=False, seed=0,
                                      n_threads=max(1, min(8, os.cpu_count() or 1)))
        if adapter is not None:
            kwargs["lora_path"] = str(adapter)
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


def default_quant(run_dir: Path) -> str:
    mfs = ((manifest.load(run_dir).get("export") or {}).get("modelfiles") or {})
    if "Q4_K_M" in mfs:
        return "Q4_K_M"
    for q in reversed(QUANTIZATIONS):  # the smallest exported
        if q in mfs:
            return q
    return "Q4_K_M"


def run(argv: list[str]) -> int:
    a = _parser().parse_args(argv)
    try:
        names.check_plain(a.output_dir)
    except ValueError as e:
        raise OptionsError([f"--output-dir: {e}"]) from None
    run_dir = names.resolve_under(a.data_root, f"outputs/{a.output_dir}", "output dir")
    if not (run_dir / manifest.MANIFEST).is_file():
        raise ExportError(f"no run {a.output_dir!r} under {Path(a.data_root) / 'outputs'}")
    quant = a.quantization.strip().upper() if a.quantization else default_quant(run_dir)
    if quant not in QUANTIZATIONS:
        raise OptionsError([f"--quantization: unknown quantization {a.quantization!r}; choose from "
                            f"{', '.join(QUANTIZATIONS)}"])
    s = Session(run_dir, quant, a.temperature)
    if a.prompt is not None:
        s.ask(a.prompt, a.max_tokens, out=sys.stdout)
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
        s.ask(line, a.max_tokens, out=sys.stdout)
        print()
