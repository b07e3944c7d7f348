"""``python -m kolo_trainer eval --output-dir RUN [options] --data-root ROOT``: measure what each GGUF keeps.

Order of work: every input is checked first (the run, its GGUFs, the reference model's whereabouts, the data and
its encoding), then the HF model runs over the conversations (its logits at the assistant positions are kept as
the reference), then each GGUF in turn on the very same ids. ``eval.json`` and ``eval.png`` are written at the end,
atomically, under the run's lock: a refused or interrupted eval leaves the previous ones as they were.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import __version__, manifest, progress, spec, templates
from ..errors import DataError, ExportError
from ..runfolder import DataRoot, Run
from . import data as edata
from .ggufs import gguf_files
from . import models
from .metrics import Tally, recommend
from .options import EvalOptions

PROG = "python -m kolo_trainer eval"
EVAL_FILE = "eval.json"
PLOT_FILE = "eval.png"
HF = "HF"
#: The HF logits kept as the reference (positions x vocabulary, float32) stay under this many bytes; conversations
#: beyond it are not measured (said in eval.json), so a large vocabulary cannot exhaust the memory.
REFERENCE_BYTES = 1 << 30


@dataclass
class Plan:
    opts: EvalOptions
    run: Run
    data: dict
    ref: models.Reference
    files: dict  # quantisation -> export.chat.Exported
    tok: Any
    jinja: str
    date: Optional[str]
    stops: list[str]
    sel: edata.Selection
    items: list = field(default_factory=list)
    stop_ids: set = field(default_factory=set)  # token ids that end a greedy answer


def run(argv: list[str]) -> int:
    # llama.cpp runs after PyTorch here; idle OpenMP threads that spin would slow every llama.cpp call on a small
    # machine (see export/verify.py). Set before torch is first imported in this process.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _explicit = spec.parse_argv(EvalOptions, rest, prog=PROG)
    assert isinstance(opts, EvalOptions)
    root = DataRoot(root_s).check(writable=True)
    run_ = root.run(opts.output_dir, "output dir")
    plan = check(root, run_, opts)
    with run_.lock():
        report = measure(plan)
        write(run_, report)
    rec = report["recommendation"]
    progress.emit("result", stage="eval", run=opts.output_dir, file=f"{run_.label}/{EVAL_FILE}",
                  recommendation=rec.get("quantization"), reason=rec.get("reason"))
    return 0


# ------------------------------------------------------------------------------------------------ checks


def check(root: DataRoot, run: Run, opts: EvalOptions) -> Plan:
    """Everything the measurement needs, before any model loads (a bad input costs seconds and writes nothing)."""
    data = run.require(finished=True, verb="evaluate", error=ExportError)
    files = gguf_files(run, data, opts.quantization)
    ref = models.reference(root, run, data)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ref.tokenizer_dir)
    ct = data.get("chat_template") or {}
    jinja, date = ct.get("jinja") or tok.chat_template, ct.get("date")
    templates.pin_date(date)  # the day the run's template printed, for every rendering in this process
    sel = edata.select(root, data, opts.eval_data, tok, jinja)
    max_len = int((data.get("options") or {}).get("max_seq_length") or 2048)
    plan = Plan(opts, run, data, ref, files, tok, jinja, date, list(ct.get("stop") or []), sel)
    from ..export.verify import config_eos, stop_ids

    plan.stop_ids = stop_ids(tok, config_eos(Path(ref.model)), plan.stops)
    plan.items = edata.encode(sel.rows, tok, jinja, max_len, opts.max_rows, date)
    if not plan.items:
        raise DataError([f"{sel.file}: no conversation has an assistant reply within {max_len} tokens to "
                         "measure"], hint="give --eval-data FILE with assistant replies")
    return plan


# ------------------------------------------------------------------------------------------------ measuring


def measure(plan: Plan) -> dict:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    warnings = list(plan.sel.warnings)
    for w in warnings:
        progress.emit("warning", message=w)
    answers = _answer_rows(plan)
    _stage(HF, "start")
    ref_rows, results, texts = _measure_hf(plan, answers, warnings)
    timings[HF] = round(time.monotonic() - t0, 2)
    _stage(HF, "done", seconds=timings[HF])
    items = plan.items[:len(ref_rows)]
    sizes: dict[str, int] = {}
    tokens: dict = {}
    for q, files in plan.files.items():
        t = time.monotonic()
        _stage(q, "start")
        results[q], texts[q], parity = _measure_gguf(plan, files, items, ref_rows, answers)
        sizes[q] = files.gguf.stat().st_size + (files.adapter.stat().st_size if files.adapter else 0)
        results[q].update(file=str(files.gguf.relative_to(plan.run.path.resolve())), bytes=sizes[q])
        tokens = tokens or parity
        timings[q] = round(time.monotonic() - t, 2)
        _stage(q, "done", seconds=timings[q])
    if tokens.get("mismatches"):
        warnings.append(f"llama.cpp tokenises {len(tokens['mismatches'])} of {tokens['conversations']} "
                        "conversation(s) differently from the HF tokenizer (Ollama would see other ids); the "
                        "figures are on the HF ids")
    timings["total"] = round(time.monotonic() - t0, 2)
    return _report(plan, items, results, sizes, tokens, answers, texts, warnings, timings)


def _stage(model: str, status: str, **kw: Any) -> None:
    progress.emit("stage", stage=f"eval {model}", status=status, **kw)


def _answer_rows(plan: Plan) -> list[dict]:
    """The first ``--answers`` conversations with a user turn before a reply: prompt ids and the reference reply."""
    from ..export.verify import hf_prompt_ids, prompt_of

    out = []
    for it in plan.items:
        if len(out) >= plan.opts.answers:
            break
        msgs = [m for m in it.messages]
        if not any(m["role"] == "assistant" for m in msgs[1:]):
            continue
        prompt = prompt_of(msgs)
        out.append({"row": plan.sel.numbers[it.row], "prompt": prompt, "reference": msgs[len(prompt)]["content"],
                    "ids": hf_prompt_ids(plan.tok, plan.jinja, prompt, plan.date)})
    return out


def _measure_hf(plan: Plan, answers: list[dict], warnings: list[str]) -> tuple[list, dict, dict]:
    from ..export.verify import hf_greedy

    model = models.load_hf(plan.ref)
    ref_rows, tally, kept = [], Tally(), 0
    for it in plan.items:
        rows = models.hf_rows(model, it.enc.input_ids, it.pos)
        kept += rows.nbytes
        if ref_rows and kept > REFERENCE_BYTES:
            warnings.append(f"measured {len(ref_rows)} of {len(plan.items)} conversation(s): the reference logits "
                            f"of more would exceed {REFERENCE_BYTES >> 20} MiB")
            break
        ref_rows.append(rows)
        tally.add(rows, rows, [it.enc.input_ids[p] for p in it.pos])
        progress.emit("progress", stage=f"eval {HF}", step=len(ref_rows), total=len(plan.items))
    texts = []
    for a in answers:
        out, _m = hf_greedy(model, a["ids"], plan.stop_ids, plan.tok.pad_token_id,
                            n=plan.opts.max_new_tokens)
        texts.append(models.answer_text(plan.tok, out, plan.stops))
    del model
    return ref_rows, {HF: tally.result()}, {HF: texts}


def _measure_gguf(plan: Plan, files: Any, items: list, ref_rows: list, answers: list[dict]) -> tuple[dict, list, dict]:
    from ..export.verify import first_diff, gguf_greedy

    need = max([len(it.enc.input_ids) for it in items] + [len(a["ids"]) + plan.opts.max_new_tokens
                                                          for a in answers])
    llm = models.load_gguf(files.gguf, files.adapter, n_ctx=need + 16)
    tally, mism = Tally(), []
    try:
        for k, (it, ref) in enumerate(zip(items, ref_rows)):
            ids = it.enc.input_ids
            tally.add(ref, models.gguf_rows(llm, ids, it.pos), [ids[p] for p in it.pos])
            gg = models.gguf_ids(llm, it.enc.text, plan.tok.bos_token)[:len(ids)]
            if gg != ids:
                d = first_diff(ids, gg)
                mism.append({"row": it.row, "position": d, "hf": ids[d:d + 5], "gguf": gg[d:d + 5]})
            progress.emit("progress", stage=f"eval {files.quant}", step=k + 1, total=len(items))
        texts = [models.answer_text(plan.tok, gguf_greedy(llm, a["ids"], plan.stop_ids,
                                                          n=plan.opts.max_new_tokens), plan.stops) for a in answers]
    finally:
        if hasattr(llm, "close"):
            llm.close()
    parity = {"conversations": len(items), "equal": len(items) - len(mism), "mismatches": mism[:20]}
    return tally.result(), texts, parity


# ------------------------------------------------------------------------------------------------ report


def _report(plan: Plan, items: list, results: dict, sizes: dict, tokens: dict, answers: list[dict], texts: dict,
            warnings: list[str], timings: dict) -> dict:
    o = plan.opts
    rec = recommend({q: r for q, r in results.items() if q != HF}, sizes, o.max_kl, o.min_top1)
    side = [{"row": a["row"], "prompt": a["prompt"][-1]["content"] if a["prompt"] else "",
             "reference": a["reference"], "answers": {m: texts[m][i] for m in texts}} for i, a in enumerate(answers)]
    return {
        "kolo_version": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": plan.run.name, "options": o.model_dump(),
        "data": {"source": plan.sel.source, "file": plan.sel.file, "rows": len(items),
                 "positions": results[HF].get("positions", 0)},
        "reference": {"model": plan.ref.label, "note": "KL divergence and top-1 agreement are measured against "
                      "this model's next-token distribution at the same assistant positions"},
        "budget": {"max_kl": o.max_kl, "min_top1": o.min_top1},
        "models": results, "recommendation": rec, "tokens": tokens, "answers": side,
        "plot": PLOT_FILE, "warnings": warnings, "timings": timings,
    }


def write(run: Run, report: dict) -> None:
    from .plot import plot

    if plot(report, run.path / PLOT_FILE):
        report["plot"] = PLOT_FILE
    else:
        report["plot"] = None
    manifest.write_json_atomic(run.path / EVAL_FILE, report)
