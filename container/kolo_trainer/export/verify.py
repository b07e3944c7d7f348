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


def first_diff(a: list, b: list) -> int:
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
    return templates.strip_bos(templates.render(jinja, msgs, add_generation_prompt=True, bos_token="",
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
        k = first_diff(h, g)
        entry.update(first_diff=start + k, hf_margin=m[k], hf=h[k:], gguf=g[k:])
    return entry


def load_llama(path: Path, lora: Optional[Path] = None, n_ctx: int = 512, logits_all: bool = False):
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


def hf_model(reference_dir: Path, adapter_dir: Optional[Path]):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(reference_dir), dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.eval()
    return model


def config_eos(model_dir: Path) -> Any:
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


class Reference:
    """The HF side of verification: the tokenizer, the prompts and sequences to check, and the HF model's argmax
    along them. It depends on the trained model only, never on a GGUF, so export starts it (:meth:`start`) in a
    background thread while llama.cpp's converter -- a subprocess on one core -- writes the F16 GGUF: ``import
    transformers``, the fp32 load and the forward pass then cost the export no wall time on a machine with a
    second core. Not started (a cached conversion, or a model whose fp32 copy would not fit next to the
    converter), it computes inline: the inputs first, the HF forward pass last (see :func:`verify_all`)."""

    def __init__(self, ctx: stages.Context, reference_dir: Path, adapter_dir: Optional[Path]):
        self.ctx, self.reference_dir, self.adapter_dir = ctx, reference_dir, adapter_dir
        self._inputs: Optional[SimpleNamespace] = None
        self._tops: Optional[tuple[list, list]] = None
        self._thread: Any = None
        self._error: Optional[BaseException] = None
        self.background_s: Optional[float] = None

    def start(self) -> None:
        import threading

        if self._thread is None and self._inputs is None and _fp32_fits(self.reference_dir):
            self._thread = threading.Thread(target=self._background, name="kolo-verify-reference", daemon=True)
            self._thread.start()

    def _background(self) -> None:
        import time

        import torch

        t = time.monotonic()
        try:
            # One core stays with the converter (and later the quantiser); a pool of idle spinning OpenMP threads
            # would slow both.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
            self._compute_inputs()
            self._compute_tops()
        except BaseException as e:  # re-raised in the main thread by _join, where verification reports it
            self._error = e
        self.background_s = round(time.monotonic() - t, 2)

    def _join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error

    def inputs(self) -> SimpleNamespace:
        self._join()
        return self._compute_inputs()

    def tops(self) -> tuple[list, list]:
        self._join()
        return self._compute_tops()

    def _compute_inputs(self) -> SimpleNamespace:
        if self._inputs is None:
            self._inputs = _reference_inputs(self.ctx, self.reference_dir, self.adapter_dir)
        return self._inputs

    def _compute_tops(self) -> tuple[list, list]:
        if self._tops is None:
            self._tops = hf_next_tokens(hf_model(self.reference_dir, self.adapter_dir), self._compute_inputs().seqs)
        return self._tops


def _fp32_fits(model_dir: Path) -> bool:
    """The fp32 copy of the weights (twice a 16-bit checkpoint) fits in half of the memory available now."""
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) + \
        sum(p.stat().st_size for p in model_dir.glob("*.bin"))
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return False
    return 2 * weights < avail // 2


def _reference_inputs(ctx: stages.Context, reference_dir: Path, adapter_dir: Optional[Path]) -> SimpleNamespace:
    """The tokenizer, chat template, prompts and teacher-forced sequences, from the run's training data."""
    from transformers import AutoTokenizer

    warnings: list[str] = []
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
        warnings.append(f"prompts taken from {source}")
    # Short prompts first: the check is about tokenisation and decoding, not about long contexts.
    prompts = sorted((prompt_of(c) for c in convs), key=lambda p: sum(len(m["content"]) for m in p))[:N_PROMPTS]
    convs_tf = sorted((c[:len(prompt_of(c)) + 1] for c in convs),
                      key=lambda c: sum(len(m["content"]) for m in c))[:N_GREEDY]
    seqs = [hf_prompt_ids(tok, jinja, c, date, agp=False)[:MAX_TF_TOKENS] for c in convs_tf]
    return SimpleNamespace(
        tok=tok, jinja=jinja, date=date, convs=convs, source=source, warnings=warnings, prompts=prompts,
        hf_ids=[hf_prompt_ids(tok, jinja, p, date) for p in prompts], seqs=seqs,
        starts=[min(len(hf_prompt_ids(tok, jinja, prompt_of(c), date)), len(s)) - 1 for c, s in zip(convs_tf, seqs)])


def verify_all(ctx: stages.Context, *, files: dict[str, Path], modelfiles: dict[str, str], reference: Reference,
               adapter_gguf: Optional[Path], settings: dict) -> dict:
    """All checks, llama.cpp's first and the HF model's last (unless the reference was computed in the background
    already): PyTorch's idle OpenMP threads keep spinning after a forward pass and would slow every llama.cpp call
    made after it on a small machine. ``timings`` says where the seconds went."""
    import time

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    ref = reference.inputs()
    if reference.background_s is not None:
        timings["reference_in_background"] = reference.background_s
    v = SimpleNamespace(problems=[], warnings=list(ref.warnings), res={}, step=0, total=0)
    v.total = len(files) + len(ref.prompts) + len(ref.seqs) + 1
    timings["tokenizer"] = round(time.monotonic() - t0, 2)
    # The context must hold the longest prompt plus the generated tokens (llama.cpp refuses more).
    n_ctx = max(512, max((len(i) for i in ref.hf_ids), default=0) * 2 + NEW_TOKENS + 16, MAX_TF_TOKENS + 16)
    stops = stop_ids(ref.tok, config_eos(reference.reference_dir), settings.get("stop") or [])
    t = time.monotonic()
    f16 = load_llama(files["F16"], adapter_gguf, n_ctx=n_ctx, logits_all=True)
    gg_ids = _token_parity(v, ref.tok, f16, ref.jinja, ref.date, ref.prompts, ref.hf_ids, ref.source)
    gg_tops = [gguf_next_tokens(f16, seq) for seq in ref.seqs]
    v.res["load"] = _load_checks(v, files, f16, adapter_gguf, n_ctx,
                                 gg_ids[0] if gg_ids else [f16.token_bos()], stops,
                                 gg_tops[0][ref.starts[0]:] if gg_tops else None)
    timings["llama.cpp"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    _template_result(v, template_check(ctx, ref.jinja, ref.tok, ref.convs, modelfiles, settings))
    timings["template"] = round(time.monotonic() - t, 2)
    t = time.monotonic()
    _next_token_parity(v, reference.tops(), ref.starts, gg_tops)
    timings["hf_model"] = round(time.monotonic() - t, 2)
    timings["total"] = round(time.monotonic() - t0, 2)
    status = "failed" if v.problems else ("passed with warnings" if v.warnings else "passed")
    for w in v.warnings:
        progress.emit("warning", message=w)
    return {"status": status, "problems": v.problems, "warnings": v.warnings, **v.res, "timings": timings}


def _template_result(v: SimpleNamespace, tc: dict) -> None:
    v.res["template"] = tc
    _tick(v)
    if tc["status"] == "failed":
        v.problems.extend(tc["problems"])
    elif tc["status"].startswith("skipped"):
        v.warnings.append(f"template check {tc['status']}")
    v.res["residual"] = tc.get("residual") or []


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
            k = first_diff(a, b)
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
            llm = f16 if q == "F16" else load_llama(path, adapter_gguf, n_ctx=n_ctx)
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


def _next_token_parity(v: SimpleNamespace, hf: tuple[list, list], starts: list[int],
                       gg_tops: list[list[int]]) -> None:
    """(b2) along whole training conversations (teacher forcing): the F16 GGUF's argmax vs the HF model's."""
    hf_top, hf_margin = hf
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
                k = first_diff(list(g), list(w))
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
            want = templates.strip_bos(templates.render(jinja, full, add_generation_prompt=agp, bos_token="",
                                               eos_token=tok.eos_token, date=date), tok.bos_token)
        except templates.TemplateError:
            continue  # the training template itself refuses this conversation shape
        wanted.append(want)
        go_cases.append(c)
    return wanted, go_cases
