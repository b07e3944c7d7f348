"""Stage 5: prove the exported files behave like the model that was trained.

(a) every GGUF loads in llama-cpp-python and generates;
(b) on prompts from the training data, rendered with the training chat template (and the run's pinned date), the
    GGUF tokenizer's prompt ids equal the HF tokenizer's (BOS and special tokens included); and along the shortest
    training conversations (prompt + reply, teacher forcing) the F16 GGUF predicts the same next token as the HF
    model at every position of the reply (one batched HF forward pass: the greedy decoding of the reply, checked
    at the cost of one prefill instead of one pass per generated token); a mismatch names the first differing
    position;
(c) the Modelfile's TEMPLATE (and SYSTEM), read back the way Ollama's parser reads it and rendered with Go's
    text/template the way Ollama renders chats, equals the HF chat template's rendering of the same conversations.

What the two sides are, exactly:
* HF prompt ids: the template rendered with the real ``bos_token``, tokenised without special tokens, plus one
  BOS when the tokenizer adds one and the text does not start with it (the rule training uses; see templates).
* GGUF prompt ids: what Ollama does: the template rendered *without* BOS (an Ollama TEMPLATE never contains it),
  tokenised by llama.cpp with ``add_bos`` per the GGUF's metadata and special tokens parsed.
* Next-token parity: the argmax at every reply position. The HF model is run in float32 from the same 16-bit
  weights the GGUF was converted from. A difference where HF's top-2 logit margin is below ``NEAR_TIE`` is reported
  as a warning (a numerical near-tie between f32 and llama.cpp's f16 matmuls), any other difference fails. Each
  GGUF is loaded and generates ``LOAD_TOKENS`` tokens (stopping at eos + single-token stop strings).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from .. import progress, templates
from . import stages

N_PROMPTS = 4
N_GREEDY = 3  # conversations checked token by token against the HF model (teacher forcing)
NEW_TOKENS = 16
MAX_TF_TOKENS = 256
LOAD_TOKENS = 4
NEAR_TIE = 0.02


def _first_diff(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def dataset_conversations(ctx: stages.Context, limit: int = 8) -> list[list[dict]]:
    """Conversations from the run's training file (first ``limit`` that have an assistant turn after a user)."""
    from .. import data as kdata

    d = ctx.data.get("data") or {}
    opts = ctx.data.get("options") or {}
    candidates = [d.get("train_file"), opts.get("train_data")]
    for c in [c for c in candidates if c]:
        p = Path(c) if Path(c).is_absolute() else ctx.root / c
        if not p.is_file():
            continue
        res = kdata.load(p, opts.get("data_format") or d.get("format") or "auto")
        convs = []
        for row in res.rows:
            msgs = [{"role": m["role"], "content": m["content"]} for m in row.messages]
            if any(m["role"] == "assistant" for m in msgs[1:]):
                convs.append(msgs)
            if len(convs) >= limit:
                break
        if convs:
            return convs
    return []


def prompt_of(conv: list[dict]) -> list[dict]:
    """The conversation up to (not including) its last assistant turn: what a user sends for that reply."""
    last = max(i for i, m in enumerate(conv) if m["role"] == "assistant")
    return conv[:last]


def _strip_bos(text: str, bos: Optional[str]) -> str:
    return text[len(bos):] if bos and text.startswith(bos) else text


def _adds_bos(tok: Any) -> bool:
    # The tokenizer's behaviour, not its add_bos_token attribute (they can disagree): the rule training uses.
    ids = tok("a")["input_ids"]
    return bool(ids) and tok.bos_token_id is not None and ids[0] == tok.bos_token_id


def hf_prompt_ids(tok: Any, jinja: str, msgs: list[dict], date: Optional[str] = None, agp: bool = True) -> list[int]:
    text = templates.render(jinja, msgs, add_generation_prompt=agp, bos_token=tok.bos_token or "",
                            eos_token=tok.eos_token, date=date)
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if _adds_bos(tok) and tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
        ids = [tok.bos_token_id] + ids
    return ids


def ollama_prompt_text(tok: Any, jinja: str, msgs: list[dict], date: Optional[str] = None) -> str:
    return _strip_bos(templates.render(jinja, msgs, add_generation_prompt=True, bos_token="",
                                       eos_token=tok.eos_token, date=date), tok.bos_token)


def stop_ids(tok: Any, model_cfg: Any, stops: list[str]) -> set[int]:
    ids: set[int] = set()
    for e in (tok.eos_token_id, getattr(model_cfg, "eos_token_id", None)):
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple)):
            ids.update(int(x) for x in e)
    for s in stops:
        enc = tok(s, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(int(enc[0]))
    return ids


def hf_next_tokens(model: Any, seqs: list[list[int]]) -> tuple[list[list[int]], list[list[float]]]:
    """One batched forward pass (right padding): each position's argmax and top-1 minus top-2 logit margin."""
    import torch

    if not seqs:
        return [], []
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    with torch.inference_mode():
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
    top = torch.topk(logits, 2, dim=-1)
    tops, margins = [], []
    for i, s in enumerate(seqs):
        tops.append([int(t) for t in top.indices[i, :len(s), 0]])
        margins.append([float(v) for v in (top.values[i, :len(s), 0] - top.values[i, :len(s), 1])])
    return tops, margins


def gguf_next_tokens(llm: Any, seq: list[int]) -> list[int]:
    """llama.cpp's argmax at every position of ``seq`` (the model was loaded with logits_all)."""
    llm.reset()
    llm.eval(seq)
    return [int(x) for x in llm.scores[:len(seq)].argmax(axis=-1)]


def _tf_entry(i: int, start: int, hf: list[int], margins: list[float], gg: list[int]) -> dict:
    """Compare from the last prompt position on (the predictions that write the reply)."""
    h, g, m = hf[start:], gg[start:], margins[start:]
    entry: dict[str, Any] = {"prompt": i, "equal": h == g, "hf": h, "gguf": g}
    if h != g:
        k = _first_diff(h, g)
        entry.update(first_diff=start + k, hf_margin=m[k], hf=h[k:], gguf=g[k:])
    return entry


def _load_llama(path: Path, lora: Optional[Path] = None, n_ctx: int = 512, logits_all: bool = False):
    import llama_cpp

    kwargs: dict[str, Any] = dict(model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0, logits_all=logits_all,
                                  n_threads=max(1, min(8, os.cpu_count() or 1)))
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    return llama_cpp.Llama(**kwargs)


def gguf_greedy(llm: Any, ids: list[int], stops: set[int], n: int = NEW_TOKENS) -> list[int]:
    out: list[int] = []
    for t in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(t))
        if t in stops or len(out) >= n:
            break
    return out


def hf_greedy(model: Any, ids: list[int], stops: set[int], pad_id: Optional[int],
              n: int = NEW_TOKENS) -> tuple[list[int], list[float]]:
    """Greedy new tokens and the top-1 minus top-2 logit margin at each step (plain argmax, no processors)."""
    import torch

    cur = torch.tensor([ids], device=model.device)
    out: list[int] = []
    margins: list[float] = []
    past = None
    with torch.no_grad():
        step_in = cur
        for _ in range(n):
            res = model(input_ids=step_in, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[0, -1].float()
            top = torch.topk(logits, 2)
            t = int(top.indices[0])
            margins.append(float(top.values[0] - top.values[1]))
            out.append(t)
            if t in stops:
                break
            step_in = torch.tensor([[t]], device=model.device)
    return out, margins


def _hf_model(reference_dir: Path, adapter_dir: Optional[Path]):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(reference_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.eval()
    return model


def _config_eos(model_dir: Path) -> Any:
    """eos_token_id of config.json and generation_config.json (read as JSON: no model load needed)."""
    import json

    ids: list = []
    for name in ("config.json", "generation_config.json"):
        try:
            e = json.loads((model_dir / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            continue
        ids += e if isinstance(e, list) else [e] if isinstance(e, int) else []
    return SimpleNamespace(eos_token_id=ids)


def verify_all(ctx: stages.Context, *, files: dict[str, Path], modelfiles: dict[str, str], reference_dir: Path,
               adapter_dir: Optional[Path], adapter_gguf: Optional[Path], settings: dict) -> dict:
    """All checks, llama.cpp's first and the HF model's last: PyTorch's idle OpenMP threads keep spinning after a
    forward pass and would slow every llama.cpp call made after it on a small machine. ``timings`` says where the
    seconds went."""
    import time

    from transformers import AutoTokenizer

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    v = SimpleNamespace(problems=[], warnings=[], res={}, step=0, total=0)
    ct = ctx.data.get("chat_template") or {}
    tok_dir = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file() \
        else reference_dir
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    jinja, date = ct.get("jinja") or tok.chat_template, ct.get("date")
    convs = dataset_conversations(ctx)
    source = "training data"
    if not convs:
        convs = [list(c) for c in templates.BATTERY if any(m["role"] == "assistant" for m in c[1:])]
        source = "kolo's template test conversations (the training file could not be read)"
        v.warnings.append(f"prompts taken from {source}")
    # Short prompts first: the check is about tokenisation and decoding, not about long contexts.
    prompts = sorted((prompt_of(c) for c in convs), key=lambda p: sum(len(m["content"]) for m in p))[:N_PROMPTS]
    convs_tf = sorted((c[:len(prompt_of(c)) + 1] for c in convs),
                      key=lambda c: sum(len(m["content"]) for m in c))[:N_GREEDY]
    v.total = len(files) + len(prompts) + len(convs_tf) + 1
    timings["tokenizer"] = round(time.monotonic() - t0, 2)

    hf_ids = [hf_prompt_ids(tok, jinja, p, date) for p in prompts]
    seqs = [hf_prompt_ids(tok, jinja, c, date, agp=False)[:MAX_TF_TOKENS] for c in convs_tf]
    starts = [min(len(hf_prompt_ids(tok, jinja, prompt_of(c), date)), len(s)) - 1 for c, s in zip(convs_tf, seqs)]
    # The context must hold the longest prompt plus the generated tokens (llama.cpp refuses more).
    n_ctx = max(512, max((len(i) for i in hf_ids), default=0) * 2 + NEW_TOKENS + 16, MAX_TF_TOKENS + 16)
    stops = stop_ids(tok, _config_eos(reference_dir), settings.get("stop") or [])
    t = time.monotonic()
    f16 = _load_llama(files["F16"], adapter_gguf, n_ctx=n_ctx, logits_all=True)
    gg_ids = _token_parity(v, tok, f16, jinja, date, prompts, hf_ids, source)
    gg_tops = [gguf_next_tokens(f16, seq) for seq in seqs]
    v.res["load"] = _load_checks(v, files, f16, adapter_gguf, n_ctx, gg_ids[0] if gg_ids else [f16.token_bos()],
                                 stops, gg_tops[0][starts[0]:] if gg_tops else None)
    timings["llama.cpp"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    v.res["template"] = template_check(ctx, jinja, tok, convs, modelfiles, settings)
    _tick(v)
    tc = v.res["template"]
    if tc["status"] == "failed":
        v.problems.extend(tc["problems"])
    elif tc["status"].startswith("skipped"):
        v.warnings.append(f"template check {tc['status']}")
    v.res["residual"] = tc.get("residual") or []
    timings["template"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    _next_token_parity(v, _hf_model(reference_dir, adapter_dir), seqs, starts, gg_tops)
    timings["hf_model"] = round(time.monotonic() - t, 2)
    timings["total"] = round(time.monotonic() - t0, 2)
    status = "failed" if v.problems else ("passed with warnings" if v.warnings else "passed")
    for w in v.warnings:
        progress.emit("warning", message=w)
    return {"status": status, "problems": v.problems, "warnings": v.warnings, **v.res, "timings": timings}


def _tick(v: SimpleNamespace) -> None:
    v.step += 1
    progress.emit("progress", stage="verify", step=v.step, total=v.total)


def _token_parity(v: SimpleNamespace, tok: Any, f16: Any, jinja: str, date: Optional[str], prompts: list,
                  hf_ids: list[list[int]], source: str) -> list[list[int]]:
    """(b1) HF prompt ids vs the F16 GGUF's tokenizer on the Ollama rendering (no BOS in the text)."""
    gg_ids = [list(f16.tokenize(ollama_prompt_text(tok, jinja, p, date).encode("utf-8"), add_bos=True,
                                special=True)) for p in prompts]
    mism = []
    for i, (a, b) in enumerate(zip(hf_ids, gg_ids)):
        if a != b:
            k = _first_diff(a, b)
            mism.append({"prompt": i, "position": k, "hf": a[k:k + 5], "gguf": b[k:k + 5]})
            v.problems.append(f"token parity: prompt {i + 1}: HF and GGUF prompt token ids differ at position {k}: "
                              f"HF {a[k:k + 5]} ({tok.convert_ids_to_tokens(a[k:k + 5])}) vs GGUF {b[k:k + 5]} "
                              f"({[f16.detokenize([t], special=True).decode('utf-8', 'replace') for t in b[k:k + 5]]})")
        _tick(v)
    v.res["tokens"] = {"prompts": len(prompts), "source": source, "equal": len(prompts) - len(mism),
                       "mismatches": mism}
    return gg_ids


def _load_checks(v: SimpleNamespace, files: dict[str, Path], f16: Any, adapter_gguf: Optional[Path], n_ctx: int,
                 first: list[int], stops: set[int], f16_predicted: Optional[list[int]]) -> dict:
    """(a) every GGUF loads and generates (the F16 GGUF already ran the next-token check: its predictions are its
    sample, no second pass)."""
    load: dict[str, Any] = {}
    for q, path in files.items():
        try:
            llm = f16 if q == "F16" else _load_llama(path, adapter_gguf, n_ctx=n_ctx)
            # A few tokens prove the file loads and runs; the F16 GGUF's numbers are checked token by token.
            out = f16_predicted[:LOAD_TOKENS * 4] if q == "F16" and f16_predicted else \
                gguf_greedy(llm, first, stops, n=LOAD_TOKENS)
            text = llm.detokenize(out, special=True).decode("utf-8", "replace")
            load[q] = {"ok": bool(out), "tokens": len(out), "sample": text}
            if not out:
                v.problems.append(f"load: {path.name} loaded but generated nothing")
            if llm is not f16 and hasattr(llm, "close"):
                llm.close()
        except Exception as e:  # a file llama.cpp cannot load is exactly what this check is for
            load[q] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            v.problems.append(f"load: {path.name} does not load in llama.cpp ({type(e).__name__}: {e})")
        _tick(v)
    return load


def _next_token_parity(v: SimpleNamespace, model: Any, seqs: list[list[int]], starts: list[int],
                       gg_tops: list[list[int]]) -> None:
    """(b2) along whole training conversations (teacher forcing): the F16 GGUF's argmax vs the HF model's."""
    hf_top, hf_margin = hf_next_tokens(model, seqs)
    greedy = []
    for i, gg_top in enumerate(gg_tops):
        entry = _tf_entry(i, starts[i], hf_top[i], hf_margin[i], gg_top)
        if not entry["equal"]:
            msg = (f"next-token parity: conversation {i + 1}: HF and F16 GGUF predict different tokens at position "
                   f"{entry['first_diff']}: HF {entry['hf'][:4]} vs GGUF {entry['gguf'][:4]} (HF top-2 logit margin "
                   f"there: {round(entry['hf_margin'], 4)})")
            if entry["hf_margin"] < NEAR_TIE:
                entry["near_tie"] = True
                v.warnings.append(msg + " -- a numerical near-tie")
            else:
                v.problems.append(msg)
        greedy.append(entry)
        _tick(v)
    v.res["greedy"] = {"mode": "teacher-forced over the reply", "prompts": len(greedy),
                       "positions": sum(len(e["hf"]) for e in greedy), "equal": sum(e["equal"] for e in greedy),
                       "results": greedy}


def template_check(ctx: stages.Context, jinja: str, tok: Any, convs: list[list[dict]], modelfiles: dict[str, str],
                   settings: dict) -> dict:
    """Each Modelfile's TEMPLATE (+ SYSTEM), rendered by Go as Ollama renders chats, vs the training template
    rendered with the run's pinned date, on the prepared messages (the trimming rule). The result lists the
    residual differences (what the twin cannot reproduce, and what current Ollama does instead) -- not hidden."""
    from ..templates import gorender
    from . import modelfile, ollama_template

    if settings.get("template") is None:
        return {"status": "skipped: no TEMPLATE could be proven equivalent (see the warning)", "problems": [],
                "residual": []}
    if not gorender.available():
        return {"status": "skipped: go not installed", "problems": [], "residual": list(settings.get("residual") or [])}
    problems: list[str] = []
    checked = 0
    seen: set[str] = set()
    residual = list(settings.get("residual") or [])
    for q, rel in modelfiles.items():
        parsed = modelfile.parse((ctx.run_dir / rel).read_text(encoding="utf-8"))
        key = f"{parsed.template}\0{parsed.system}"
        if key in seen:  # every Modelfile of a run normally has the same TEMPLATE/SYSTEM: render once
            continue
        seen.add(key)
        wanted, go_cases = _template_cases(jinja, tok, convs, parsed.system, settings.get("date"))
        try:
            got = gorender.render_many(parsed.template or "", go_cases, system=parsed.system)
            thinking = gorender.thinking_capability(parsed.template or "")
        except gorender.GoUnavailable as e:
            return {"status": f"skipped: {e.message}", "problems": [], "residual": residual}
        except gorender.GoRenderError as e:
            return {"status": "failed", "problems": [f"template: {rel}: Go cannot render the TEMPLATE: {e.message}"],
                    "residual": residual}
        note = ollama_template.gguf_template_note(jinja, parsed.template or "", thinking)
        if note and note not in residual:
            residual.append(note)
        for i, (g, w) in enumerate(zip(got, wanted)):
            if g != w:
                k = _first_diff(list(g), list(w))
                problems.append(f"template: {rel}: conversation {i + 1}: Ollama's rendering differs from the chat "
                                f"template at character {k}: Go {g[max(0, k - 15):k + 15]!r} vs HF "
                                f"{w[max(0, k - 15):k + 15]!r}")
        checked += len(go_cases)
    return {"status": "failed" if problems else "passed", "conversations": checked, "problems": problems[:20],
            "residual": residual}


def _template_cases(jinja: str, tok: Any, convs: list[list[dict]], system: Optional[str],
                    date: Optional[str]) -> tuple[list[str], list[list[dict]]]:
    """The training template's renderings and the (prepared) conversations Go renders, for the same chats."""
    cases: list[list[dict]] = []
    for c in convs + [list(c) for c in templates.BATTERY]:
        cases += [c, prompt_of(c) if any(m["role"] == "assistant" for m in c[1:]) else c]
        if c and c[0]["role"] == "system":
            cases.append([m for m in c[1:]])  # what a user chatting in Ollama sends: SYSTEM comes from the Modelfile
    wanted, go_cases = [], []
    for c in cases:
        c = templates.prepare_messages(jinja, c)
        full = c if not system or (c and c[0]["role"] == "system") else [{"role": "system", "content": system}] + c
        agp = not full or full[-1]["role"] != "assistant"
        try:
            want = _strip_bos(templates.render(jinja, full, add_generation_prompt=agp, bos_token="",
                                               eos_token=tok.eos_token, date=date), tok.bos_token)
        except templates.TemplateError:
            continue  # the training template itself refuses this conversation shape
        wanted.append(want)
        go_cases.append(c)
    return wanted, go_cases
