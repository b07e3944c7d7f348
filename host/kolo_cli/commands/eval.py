"""`kolo eval RUN [options]`: how much of the trained model each GGUF keeps, on the run's own held-out data.

The measuring runs in the trainer (``python -m kolo_trainer eval``, :mod:`kolo_trainer.eval`) through the one
argv builder and the transports, like `kolo export`; it writes ``eval.json`` and ``eval.png`` in the run folder.
Before any trainer process, the options, the run (finished, exported, the asked GGUFs on disk) and an
``--eval-data`` file are checked on the host's data root: a typo or an empty file costs no container exec and
writes nothing.

``--judge`` adds LLM-judged correctness and relevancy of every greedy answer against the dataset's reference
answer. It runs here, on the host, after the trainer: the judge is Ollama (``ollama:MODEL``, ``OLLAMA_HOST``) or an
OpenAI-compatible ``/chat/completions`` URL, whose key is read from ``KOLO_JUDGE_API_KEY`` only (never a flag, so it
never shows in argv, ``ps`` or shell history, and it never enters the container). The judge prompt is
:data:`JUDGE_PROMPT`, written into eval.json with the scores.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from typing import Any, Optional

import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..state import STATE

EVAL_HELP = (
    "Measure each GGUF of an exported run against its HF model on the run's held-out rows (or --eval-data): loss "
    "and perplexity on the assistant tokens, next-token KL divergence and top-1 agreement with the HF model, and "
    "greedy answers side by side. Writes eval.json + eval.png in the run folder and recommends the smallest GGUF "
    "within the quality budget (--max-kl, --min-top1).\n\n"
    "--judge ollama:MODEL or --judge URL (OpenAI-compatible; key from KOLO_JUDGE_API_KEY) scores each answer "
    "against the reference answer.\n\n"
    "Example: kolo eval my-run   |   kolo eval my-run --quantization Q4_K_M --judge ollama:llama3.1 --json"
)

#: Environment variable holding an OpenAI-compatible judge's API key (the only place kolo reads it from).
KEY_ENV = "KOLO_JUDGE_API_KEY"

#: The one prompt every answer is judged with; written into eval.json next to the scores. Placeholders are
#: replaced literally (no str.format: the JSON braces stay as they are).
JUDGE_PROMPT = """You are grading one answer of a fine-tuned chat model against the reference answer from its \
training dataset.

Question:
<<question>>

Reference answer:
<<reference>>

Model's answer:
<<answer>>

Give two integer scores from 1 to 5:
- correctness: does the model's answer state the same facts as the reference answer? (5 = the same meaning, \
3 = partly right, 1 = wrong, contradicts it, or empty)
- relevancy: does the model's answer address the question? (5 = fully on topic, 1 = unrelated)

Reply with one JSON object and nothing else:
{"correctness": <1-5>, "relevancy": <1-5>, "reason": "<one short sentence>"}"""

SCORES = ("correctness", "relevancy")


# ------------------------------------------------------------------------------------------------ the judge


def parse_judge(judge: Optional[str], judge_model: Optional[str]) -> tuple[Optional[dict], list[str]]:
    """``--judge`` and ``--judge-model`` as {kind, model, url}, and every problem with them."""
    if judge is None:
        return None, (["--judge-model needs --judge URL"] if judge_model is not None else [])
    if judge.startswith("ollama:"):
        from ..ollama_client import check_model_name, default_url

        model = judge[len("ollama:"):]
        problems = [] if judge_model is None else ["--judge-model is for a URL judge; ollama:MODEL names the model"]
        try:
            check_model_name(model)
        except KoloError as e:
            problems.append(f"--judge: {e.message}")
        return {"kind": "ollama", "model": model, "url": default_url()}, problems
    from urllib.parse import urlsplit

    parts = urlsplit(judge)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, [f"--judge {judge!r}: give ollama:MODEL or an http(s):// URL of an OpenAI-compatible API"]
    if parts.username or parts.password or re.search(r"(?i)(key|token)=", parts.query):
        return None, [f"--judge: the URL carries a credential; put the key in {KEY_ENV} instead (a command line "
                      "is visible to every user of the machine)"]
    if not judge_model:
        return None, ["--judge URL needs --judge-model NAME (the model the API should use)"]
    path = parts.path.rstrip("/")
    url = judge if path.endswith("/chat/completions") else judge.rstrip("/") + "/chat/completions"
    return {"kind": "openai", "model": judge_model, "url": url}, []


def judge_prompt(question: str, reference: str, answer: str) -> str:
    return JUDGE_PROMPT.replace("<<question>>", question).replace("<<reference>>", reference) \
        .replace("<<answer>>", answer or "(empty)")


def _ask(judge: dict, prompt: str, client: Any) -> str:
    """The judge's reply text to one prompt."""
    if judge["kind"] == "ollama":
        return str((client.chat(judge["model"], prompt, options={"temperature": 0}).get("message") or {})
                   .get("content", ""))
    import httpx

    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"} if os.environ.get(KEY_ENV) else {}
    body = {"model": judge["model"], "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    try:
        resp = client.post(judge["url"], json=body, headers=headers)
    except httpx.HTTPError as e:
        raise KoloError(f"no judge answers at {judge['url']} ({type(e).__name__})",
                        hint="check the URL, or start the judge; eval.json is kept without judge scores") from None
    if resp.status_code in (401, 403):
        raise KoloError(f"the judge at {judge['url']} refused the request ({resp.status_code})",
                        hint=f"set the API key in the environment variable {KEY_ENV}")
    if resp.status_code >= 400:
        raise KoloError(f"the judge at {judge['url']} answered HTTP {resp.status_code}: {resp.text[:200]}")
    try:
        return str(resp.json()["choices"][0]["message"]["content"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise KoloError(f"the judge at {judge['url']} did not answer like an OpenAI-compatible "
                        "/chat/completions API (no choices[0].message.content)") from None


def parse_scores(text: str) -> dict:
    """{"correctness", "relevancy", "reason"} from the judge's reply, or {"error": ...} when it is not that."""
    m = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        obj = json.loads(m.group(0)) if m else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return {"error": "the judge's reply holds no JSON object", "reply": text[:300]}
    out: dict[str, Any] = {}
    for k in SCORES:
        v = obj.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 5:
            return {"error": f"the judge's {k!r} is not a score from 1 to 5", "reply": text[:300]}
        out[k] = int(round(v))
    out["reason"] = str(obj.get("reason", ""))[:500]
    return out


def judge_answers(report: dict, judge: dict) -> dict:
    """Every greedy answer of ``report`` judged against its reference: the judge section of eval.json."""
    scores = []
    with _client(judge) as client:
        for a in report.get("answers") or []:
            for model, answer in a["answers"].items():
                reply = _ask(judge, judge_prompt(a["prompt"], a["reference"], answer), client)
                scores.append({"row": a["row"], "model": model, **parse_scores(reply)})
    means: dict[str, dict] = {}
    for model in dict.fromkeys(s["model"] for s in scores):
        ok = [s for s in scores if s["model"] == model and "error" not in s]
        means[model] = {k: round(sum(s[k] for s in ok) / len(ok), 3) for k in SCORES} if ok else {}
        means[model]["judged"] = len(ok)
    return {"judge": f"ollama:{judge['model']}" if judge["kind"] == "ollama" else judge["url"],
            "model": judge["model"], "url": judge["url"],
            "key": f"from {KEY_ENV}" if judge["kind"] == "openai" and os.environ.get(KEY_ENV) else None,
            "scale": "1 (worst) to 5 (best)", "prompt": JUDGE_PROMPT, "scores": scores, "mean": means}


def _client(judge: dict) -> Any:
    if judge["kind"] == "ollama":
        from ..ollama_client import OllamaClient

        return OllamaClient(judge["url"], timeout=300.0)
    import httpx

    return httpx.Client(timeout=300.0)


# ------------------------------------------------------------------------------------------------ the verb


def _check_eval_data(rel: str) -> None:
    """An --eval-data file that exists under the data root and has valid rows (every problem, file:line)."""
    from kolo_trainer import data

    path = STATE.data().check().file(rel, "--eval-data")
    data.raise_if_invalid(data.load(str(path), "auto", display_name=rel), False)


class _Quiet:
    """A renderer for --json: the trainer's events and stdout are not shown (stdout stays one JSON document);
    its stderr (errors) is."""

    def __init__(self) -> None:
        from ..render import PlainRenderer

        self.inner = PlainRenderer()

    def event(self, ev: dict[str, Any]) -> None:
        pass

    def log(self, line: str, stream: str = "stdout") -> None:
        if stream == "stderr":
            self.inner.log(line, stream)

    def close(self) -> None:
        self.inner.close()


def eval_(flags: dict[str, Any], run: str, judge: Optional[str], judge_model: Optional[str], as_json: bool,
          dry_run: bool) -> None:
    from kolo_trainer.eval.ggufs import check_run
    from kolo_trainer.eval.options import EvalOptions

    from .export import _check_run, _remote, _run_trainer, _validate

    remote = not dry_run and _remote()  # the run and --eval-data are on the engine: the trainer checks them there
    explicit, problems = _validate(EvalOptions, flags, run)
    spec_judge, judge_problems = parse_judge(judge, judge_model)
    problems += judge_problems
    if dry_run:
        if problems:
            raise OptionsError(problems, hint="see `kolo eval --help`")
    else:
        _check_run(run, problems, lambda r: check_run(r, list(explicit.get("quantization") or [])), "eval")
        if explicit.get("eval_data") and not remote:
            _check_eval_data(explicit["eval_data"])
    _run_trainer("eval", EvalOptions, explicit, dry_run, interactive=False, renderer=_Quiet() if as_json else None)
    if dry_run:
        return
    r = _Report(run, remote)
    report = r.read()
    if spec_judge is not None:
        report["judge"] = judge_answers(report, spec_judge)
        r.write(report)
    if as_json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        show(report, r.label)


class _Report:
    """The run's eval.json the trainer wrote: in this machine's data root, or in a remote engine's (read and
    rewritten through the Docker API, ``remote_data``)."""

    def __init__(self, run: str, remote: bool):
        from kolo_trainer.eval.main import EVAL_FILE

        self.run, self.remote, self.label, self.file = run, remote, f"outputs/{run}", EVAL_FILE
        self.rel = f"{self.label}/{EVAL_FILE}"

    def _container(self) -> Any:
        from .. import docker_ctl

        return docker_ctl.require_running(STATE.container)

    def read(self) -> dict:
        from .. import remote_data

        try:
            if self.remote:
                return json.loads(remote_data.read_bytes(self._container(), self.rel))
            return json.loads(STATE.data().run(self.run).path.joinpath(self.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise KoloError(f"cannot read {self.rel} the trainer wrote ({e})",
                            hint="run `kolo eval` again with --debug") from None

    def write(self, report: dict) -> None:
        from kolo_trainer import manifest

        from .. import remote_data

        if self.remote:
            remote_data.write_bytes(self._container(), self.rel, json.dumps(report, indent=2).encode())
            return
        r = STATE.data().run(self.run)
        with r.lock():
            manifest.write_json_atomic(r.path / self.file, report)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def show(report: dict, label: str) -> None:
    """The figures as a table, the recommendation, the answers side by side, the files written."""
    from rich.table import Table

    from ..console import out

    means = (report.get("judge") or {}).get("mean") or {}
    t = Table(title=f"kolo eval {report['run']}: {report['data']['source']}, {report['data']['positions']} "
                    "assistant tokens", title_justify="left")
    for col in ("model", "MB", "loss", "perplexity", "KL vs HF", "top-1 vs HF") + \
            (("correct", "relevant") if means else ()):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m, r in report["models"].items():
        row = [m, _fmt(r.get("bytes") and r["bytes"] / 1e6, ".1f"), _fmt(r.get("loss"), ".4f"),
               _fmt(r.get("perplexity"), ".4g"), _fmt(r.get("kl"), ".2e"), _fmt(r.get("top1"), ".3f")]
        if means:
            row += [_fmt((means.get(m) or {}).get(k), ".2f") for k in SCORES]
        t.add_row(*row)
    con = out()
    con.print(t)
    rec, b = report["recommendation"], report["budget"]
    con.print(f"budget: KL <= {b['max_kl']} and top-1 >= {b['min_top1']} (--max-kl, --min-top1)")
    con.print(f"recommended: {rec['quantization'] or 'none'} ({rec['reason']})")
    if report.get("answers"):
        a_t = Table(title="greedy answers", title_justify="left", show_lines=True)
        for col in ("row", "prompt", "reference", *report["answers"][0]["answers"]):
            a_t.add_column(col)
        for a in report["answers"]:
            a_t.add_row(str(a["row"]), a["prompt"], a["reference"], *a["answers"].values())
        con.print(a_t)
    for w in report.get("warnings") or []:
        from ..console import warn

        warn(w)
    con.print(f"written: {label}/eval.json, {label}/{report.get('plot') or '(no plot)'}")


def _param(name: str, default: Any, annotation: Any = str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def register(app: typer.Typer) -> None:
    from ..optionflags import make_command

    make_command(app, "eval", "kolo_trainer.eval.options:EvalOptions", eval_, EVAL_HELP, [
        _param("run", typer.Argument(..., metavar="OUTPUT_DIR", help="The exported run (folder name under "
                                     "outputs/).")),
        _param("judge", typer.Option(None, "--judge", metavar="ollama:MODEL|URL", help="Judge each answer against "
                                     "the reference: an Ollama model, or an OpenAI-compatible API URL (key from "
                                     f"{KEY_ENV}).", rich_help_panel="Judge"), Optional[str]),
        _param("judge_model", typer.Option(None, "--judge-model", metavar="NAME", help="The model a --judge URL "
                                           "uses.", rich_help_panel="Judge"), Optional[str]),
        _param("as_json", typer.Option(False, "--json", help="Print eval.json (one JSON document) instead of "
                                       "the tables.", rich_help_panel="Run"), bool),
        _param("dry_run", typer.Option(False, "--dry-run", help="Print the exact command (one shell-quoted line) "
                                       "and run nothing.", rich_help_panel="Run"), bool),
    ], rich_help_panel="Export")
