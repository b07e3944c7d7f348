"""``python -m kolo_trainer export --output-dir RUN [options] --data-root ROOT``: the export verb.

Reads ``<root>/outputs/RUN/kolo.json`` (written by training), checks everything the export needs before it touches
the manifest (:func:`check`), then runs the stages in order through :func:`stages.run`, each skipped when its
outputs are up to date:

    merge (LoRA -> <run>/merged, 16-bit)  ->  convert (-> gguf/RUN-F16.gguf)  ->  quantize (-> gguf/RUN-Q.gguf)
    ->  report (tensor types of each GGUF)  ->  Modelfile per GGUF (gguf/Modelfile.Q)  ->  verify

With ``--adapter-only`` the LoRA becomes a GGUF adapter (gguf/RUN-lora-F16.gguf) and the base model is converted
(and quantised) on its own (gguf/RUN-base-Q.gguf); each Modelfile then says ``FROM ./RUN-base-Q.gguf`` +
``ADAPTER ./RUN-lora-F16.gguf``: Ollama needs the base as a file, and converting the exact base the adapter was
trained on is the only way to be sure it is the same model.

The manifest's ``export.quantizations`` / ``modelfiles`` / ``template`` / ``verification`` describe the latest export
only: they are emptied when an export starts and written when it ends, so a failed export never leaves an earlier
export's files listed as current. Ask for every quantisation you want each time (the ones already done are
skipped, so that costs nothing); files of an earlier export with other quantisations are left alone but no longer
listed.

A refused export (bad option, missing adapter or base model, no converter) is refused before the manifest says
"running": it never changes what a finished export recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .. import manifest, preflight, progress, spec
from ..errors import ExportError, KoloError, OptionsError, VerificationError
from ..options import ExportOptions
from ..runfolder import DataRoot, Run
from . import ollama_template, stages

SIXTEEN_BIT = ("F16", "BF16")


def method_of(data: dict) -> str:
    return str(data.get("method") or (data.get("options") or {}).get("method") or "lora")


@dataclass
class Plan:
    """What :func:`check` resolved: which model folder is converted, and under which GGUF names."""

    method: str
    adapter_dir: Path
    base: Optional[str]  # the base model (folder or hub id) of a LoRA run
    model_dir: Optional[Path]  # converted as is (full fine-tune, --adapter-only base); None: merged/ first
    prefix: str  # gguf/<prefix>-<Q>.gguf


def run(argv: list[str]) -> int:
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _explicit = spec.parse_argv(ExportOptions, rest, prog="python -m kolo_trainer export")
    assert isinstance(opts, ExportOptions)
    root = DataRoot(root_s).check(writable=True)
    run = root.run(opts.output_dir, "output dir")
    data = run.require(finished=True, verb="export", error=ExportError)
    ctx = stages.Context(root=root.path, run_dir=run.path, name=opts.output_dir, opts=opts, data=data,
                         stages=dict((data.get("export") or {}).get("stages") or {}))
    plan = check(root, run, ctx)
    with run.lock():
        # Leftovers of a crashed export (we hold the lock: nobody else is writing them).
        for folder in (ctx.run_dir, ctx.gguf_dir):
            for p in manifest.clean_stale_tmp(folder):
                progress.emit("warning", message=f"removed the leftover of an interrupted export: {ctx.rel(p)}")
        result = _export(ctx, plan)
    progress.emit("result", stage="export", run=opts.output_dir, gguf=result["quantizations"],
                  modelfiles=result["modelfiles"], verification=(result.get("verification") or {}).get("status"))
    _print_summary(ctx, result)
    ver = result.get("verification") or {}
    if ver.get("status") == "failed":
        raise VerificationError("export verification failed:\n  " + "\n  ".join(ver.get("problems", [])),
                                "the GGUF files are written; see export.verification in kolo.json for details")
    return 0


# ------------------------------------------------------------------------------------------------ preconditions


def check(root: DataRoot, run: Run, ctx: stages.Context) -> Plan:
    """Everything the export needs, checked before anything is written; every problem at once.

    Option problems (``--adapter-only`` where it cannot work) are an OptionsError (exit 2); a run that cannot be
    exported as it is (no adapter, no model, its base model gone) an ExportError (exit 5)."""
    opts, method = ctx.opts, method_of(ctx.data)
    adapter_dir = run.path / "adapter"
    bad_option, bad_run = _adapter_problems(opts, method, adapter_dir)
    if method == "full" and not (run.path / "model" / "config.json").is_file():
        bad_run.append(f"{run.label}/model: no fine-tuned model (config.json) in this run")
    base = _base(root, ctx, bad_option, bad_run) if method != "full" and not bad_run else None
    if bad_option:
        raise OptionsError(bad_option + bad_run, hint="see `kolo export --help`")
    if bad_run:
        raise ExportError(f"cannot export {run.label}:\n" + "\n".join(f"  - {p}" for p in bad_run),
                          hint=f"fix what is named above, then run `kolo export {ctx.name}` again")
    if opts.adapter_only:
        plan = Plan(method, adapter_dir, base, Path(str(base)), f"{ctx.name}-base")
    elif method == "full":
        plan = Plan(method, adapter_dir, None, run.path / "model", ctx.name)
    else:
        plan = Plan(method, adapter_dir, base, None, ctx.name)
    _check_disk(root, ctx, plan)
    from . import converter

    converter.ensure()  # raises ExportError naming the fix when the converter cannot be had
    return plan


def _base(root: DataRoot, ctx: stages.Context, bad_option: list[str], bad_run: list[str]) -> Optional[str]:
    """The base model of a LoRA run (a folder, or a hub id), or None with the problem appended."""
    from .merge import resolve_base

    gone = _local_base_problems(root, ctx.data)
    if gone:
        bad_run += gone
        return None
    try:
        base = resolve_base(ctx)
    except KoloError as e:
        bad_run.append(e.message + (f" ({e.hint})" if e.hint else ""))
        return None
    if ctx.opts.adapter_only and not Path(base).is_dir():
        bad_option.append(f"--adapter-only needs the base model as a local folder under the data root, not the "
                          f"hub id {base!r}; export the merged model (without --adapter-only)")
    return base


def _adapter_problems(opts: ExportOptions, method: str, adapter_dir: Path) -> tuple[list[str], list[str]]:
    bad_option: list[str] = []
    bad_run: list[str] = []
    cfg_path = adapter_dir / "adapter_config.json"
    if opts.adapter_only and method == "full":
        bad_option.append("--adapter-only: run was fully fine-tuned (method full), there is no adapter to export")
    if method == "full":
        return bad_option, bad_run
    if not cfg_path.is_file():
        bad_run.append(f"{cfg_path.parent}: no LoRA adapter (adapter_config.json) in this run")
        return bad_option, bad_run
    try:
        acfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        bad_run.append(f"{cfg_path}: cannot be read ({e})")
        return bad_option, bad_run
    if opts.adapter_only and isinstance(acfg, dict) and acfg.get("modules_to_save"):
        # A GGUF LoRA holds lora_A/lora_B pairs only; llama.cpp's converter exits on fully trained modules.
        bad_option.append(f"--adapter-only: the adapter also trains {', '.join(acfg['modules_to_save'])} in full "
                          "(modules_to_save), which a GGUF LoRA adapter cannot hold; export the merged model "
                          "(without --adapter-only)")
    return bad_option, bad_run


def _local_base_problems(root: DataRoot, data: dict) -> list[str]:
    """A run trained on a local base model needs that folder again (merge, --adapter-only): say so when it is gone,
    rather than taking its relative name for a Hugging Face id."""
    local = (data.get("base_model") or {}).get("local_path")
    if not local or Path(str(local)).is_absolute():
        return []
    try:
        folder = root.resolve(str(local), "the base model")
    except KoloError as e:
        return [e.message]
    if (folder / "config.json").is_file():
        return []
    return [f"the base model folder {local} this run was trained on is gone from the data root {root.display} "
            "(put it back: the adapter only works with that exact model)"]


def _check_disk(root: DataRoot, ctx: stages.Context, plan: Plan) -> None:
    src = plan.model_dir or (Path(plan.base) if plan.base and Path(plan.base).is_dir() else None)
    f16 = preflight.model_bytes(src)
    if f16:
        need = preflight.export_disk_bytes(f16, ["F16", *ctx.opts.quantization], merged=plan.model_dir is None)
        root.require_free(need, f"the export of outputs/{ctx.name}")


# ------------------------------------------------------------------------------------------------ the export


def _export(ctx: stages.Context, plan: Plan) -> dict:
    """Run the stages with the manifest saying "running"; record how the export ended, whatever happens."""
    from . import converter

    t0 = time.monotonic()
    ctx.save(status="running", options=ctx.opts.model_dump(), started=manifest.now(), error=None,
             quantizations={}, modelfiles={}, verification={}, template={},
             converter={"version": converter.installed_version(), "path": str(converter.ensure())})
    try:
        result = _pipeline(ctx, plan)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        try:
            ctx.save(status=status, error=str(e)[:2000])
        except Exception:  # never hide the real error behind a manifest write problem
            pass
        raise
    ctx.save(status="finished", error=None, total_s=round(time.monotonic() - t0, 2), **result)
    _record_plan(ctx, result)
    return result


def _record_plan(ctx: stages.Context, result: dict) -> None:
    """The plan's disk estimate for the exported files next to the bytes written (kolo.json ``plan``)."""
    from ..plan import record

    plan = record.with_export(manifest.load(ctx.run_dir).get("plan"), ctx.run_dir, result["quantizations"])
    if plan is not None:
        manifest.update(ctx.run_dir, plan=plan)


def _pipeline(ctx: stages.Context, plan: Plan) -> dict:
    quants = list(dict.fromkeys(["F16", *ctx.opts.quantization]))
    if ctx.opts.adapter_only:
        stages.skipped("merge", "adapter only")
    elif plan.method == "full":
        stages.skipped("merge", "full fine-tune: converting <run>/model")
    model_dir = plan.model_dir or merge_stage(ctx, plan)
    files = {q: ctx.gguf_dir / f"{plan.prefix}-{q}.gguf" for q in quants}
    reference = _reference(ctx, plan, model_dir)
    for q in [q for q in quants if q in SIXTEEN_BIT]:
        convert_stage(ctx, model_dir, q, files[q], before=reference.start if reference else None)
    adapter_gguf = lora_stage(ctx, plan, model_dir) if ctx.opts.adapter_only else None
    todo = [q for q in quants if q not in SIXTEEN_BIT]
    for i, q in enumerate(todo):
        quantize_stage(ctx, files["F16"], q, files[q], f"{q} ({i + 1}/{len(todo)})")
        progress.emit("progress", stage="quantize", step=i + 1, total=len(todo))
    quant_info = {q: report_stage(ctx, q, files[q]) for q in quants}
    if adapter_gguf is not None:
        quant_info["LORA"] = {"file": ctx.rel(adapter_gguf), "bytes": adapter_gguf.stat().st_size}
    settings = ollama_template.settings(ctx)
    if settings["warning"]:
        progress.emit("warning", message=settings["warning"])
    modelfiles = {q: modelfile_stage(ctx, q, files[q], adapter_gguf, settings) for q in quants}
    result = {"quantizations": quant_info, "modelfiles": modelfiles,
              "template": {k: v for k, v in settings.items() if k != "template"}}
    if ctx.opts.verify:
        result["verification"] = verify_stage(ctx, plan, files, modelfiles, adapter_gguf, settings, reference)
    else:
        stages.skipped("verify", "--no-verify")
        result["verification"] = {"status": "skipped: --no-verify"}
    manifest.add_artifacts(ctx.run_dir, [ctx.run_dir / info["file"] for info in quant_info.values()]
                           + [ctx.run_dir / r for r in modelfiles.values()])
    return result


# ---------------------------------------------------------------------------------------- one function per stage


def merge_stage(ctx: stages.Context, plan: Plan) -> Path:
    """The LoRA merged into its base in 16-bit: ``<run>/merged/``."""
    from . import merge

    out = ctx.run_dir / "merged"
    base = str(plan.base)
    fp = {"adapter": stages.tree_sig(plan.adapter_dir), "base": merge.base_fingerprint(base, ctx),
          "chat_template": (ctx.data.get("chat_template") or {}).get("jinja")}
    stages.run(ctx, stages.Stage("merge", "merge", fp, [out], detail=f"adapter + {base}",
                                 write=lambda tmp: merge.merge(ctx, plan.adapter_dir, base, tmp)))
    return out


def _reference(ctx: stages.Context, plan: Plan, model_dir: Path) -> Any:
    """Verification's HF side (None with --no-verify); the F16 conversion starts it in the background."""
    if not ctx.opts.verify:
        return None
    from . import verify

    return verify.Reference(ctx, model_dir, plan.adapter_dir if ctx.opts.adapter_only else None)


def convert_stage(ctx: stages.Context, model_dir: Path, q: str, out: Path,
                  before: Optional[Callable[[], None]] = None) -> None:
    """The HF model folder as a 16-bit GGUF (F16 or BF16), by llama.cpp's own converter. ``before`` runs when the
    conversion really runs (not when it is up to date): verification's reference starts there, alongside."""
    from . import convert, converter

    fp = {"model": stages.tree_sig(model_dir), "converter": converter.installed_version(), "outtype": q}

    def write(tmp: Path) -> None:
        if before is not None:
            before()
        convert.to_gguf(model_dir, tmp, q.lower(), stage="convert")

    stages.run(ctx, stages.Stage("convert", f"convert:{q}", fp, [out], detail=ctx.rel(out), write=write))


def lora_stage(ctx: stages.Context, plan: Plan, base_dir: Path) -> Path:
    """--adapter-only: the LoRA as a GGUF adapter (gguf/<run>-lora-F16.gguf)."""
    from . import convert, converter

    out = ctx.gguf_dir / f"{ctx.name}-lora-F16.gguf"
    fp = {"adapter": stages.tree_sig(plan.adapter_dir), "base": stages.tree_sig(base_dir),
          "converter": converter.installed_version()}
    stages.run(ctx, stages.Stage(
        "convert", "convert:lora", fp, [out], detail=ctx.rel(out),
        write=lambda tmp: convert.lora_to_gguf(plan.adapter_dir, base_dir, tmp, "f16", stage="convert")))
    return out


def quantize_stage(ctx: stages.Context, src: Path, q: str, out: Path, detail: str) -> None:
    """One quantisation of the F16 GGUF, by llama.cpp's quantizer."""
    from . import converter, quantize

    fp = {"src": stages.file_sig(src), "quant": q, "llama_cpp": converter.installed_version()}
    stages.run(ctx, stages.Stage("quantize", f"quantize:{q}", fp, [out], detail=detail,
                                 write=lambda tmp: quantize.quantize(src, tmp, q)))


def report_stage(ctx: stages.Context, q: str, path: Path) -> dict:
    """The tensor types a GGUF really holds, and the tensors that fell back to another type (warned about)."""
    from . import quantize

    fp = {"gguf": stages.file_sig(path), "quant": q}
    rec = stages.run(ctx, stages.Stage("report", f"report:{q}", fp, [], detail=ctx.rel(path),
                                       write=lambda: {"report": quantize.report(path, q)}))
    rep = rec.get("report") or {}
    fallbacks = rep.get("fallbacks") or []
    if fallbacks and q not in SIXTEEN_BIT:
        shown = ", ".join(f"{f['tensor']} -> {f['type']}" for f in fallbacks[:6])
        more = len(fallbacks) - 6
        progress.emit("warning", message=f"{q}: {len(fallbacks)} tensor(s) fell back to another type than "
                      f"{quantize.MAIN_TYPE[q]}: {shown}" + (f" and {more} more" if more > 0 else "")
                      + " (k-quants need rows that are a multiple of 256)")
    return {"file": ctx.rel(path), "bytes": path.stat().st_size, **rep}


def modelfile_stage(ctx: stages.Context, q: str, gguf: Path, adapter_gguf: Optional[Path], settings: dict) -> str:
    """gguf/Modelfile.<Q>: FROM the GGUF (+ ADAPTER), TEMPLATE, SYSTEM, stops and sampling, as Ollama reads it."""
    from . import modelfile

    name = f"Modelfile.{q}"
    opts = ctx.opts
    text = modelfile.render(
        gguf_file=gguf.name, adapter_file=adapter_gguf.name if adapter_gguf else None,
        template=settings["template"], stop=settings["stop"], num_ctx=settings["num_ctx"],
        system=settings["system"], temperature=opts.temperature, top_p=opts.top_p,
        model_name=_ollama_name(ctx.name, q), modelfile_name=name, template_note=settings["warning"])
    modelfile.parse(text)  # what Ollama will read must parse (raises otherwise)
    out = ctx.gguf_dir / name
    fp = {"sha256": _sha256_text(text)}
    stages.run(ctx, stages.Stage("modelfile", f"modelfile:{q}", fp, [out], detail=ctx.rel(out),
                                 write=lambda tmp: tmp.write_text(text, encoding="utf-8")))
    return ctx.rel(out)


def verify_stage(ctx: stages.Context, plan: Plan, files: dict[str, Path], modelfiles: dict[str, str],
                 adapter_gguf: Optional[Path], settings: dict, reference: Any) -> dict:
    """Every GGUF against the trained model (tokens, greedy output, template); a crashing check is a failed one."""
    from . import verify

    adapter_only = ctx.opts.adapter_only
    fp = {"gguf": {q: stages.file_sig(p) for q, p in files.items()},
          "modelfiles": {q: stages.file_sig(ctx.run_dir / r) for q, r in modelfiles.items()},
          "adapter": stages.file_sig(adapter_gguf) if adapter_gguf else None,
          "reference": stages.tree_sig(plan.adapter_dir if adapter_only else reference.reference_dir)}
    prev = (ctx.data.get("export") or {}).get("verification") or {}
    out: dict = {}

    def write() -> dict:
        try:
            ver = verify.verify_all(ctx, files=files, modelfiles=modelfiles, reference=reference,
                                    adapter_gguf=adapter_gguf, settings=settings)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # the files are written; a crashing check is a failed check, reported
            ver = {"status": "failed", "warnings": [],
                   "problems": [f"verification could not run: {type(e).__name__}: {e}"]}
        out.update(ver)
        return {"status": ver["status"], "detail": ver["status"]}

    def passed(rec: dict) -> bool:
        return rec.get("status") in ("passed", "passed with warnings") and prev.get("status") == rec.get("status")

    stages.run(ctx, stages.Stage("verify", "verify", fp, [], write=write, keep=passed))
    return out or prev


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _ollama_name(run: str, quant: str) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in run.lower()).strip("-.") or "kolo-model"
    return f"{base}:{quant.lower()}"


def _print_summary(ctx: stages.Context, result: dict) -> None:
    print(f"export of {ctx.name!r} finished in {ctx.rel(ctx.gguf_dir)}/:")
    for q, info in result["quantizations"].items():
        fb = info.get("fallbacks") or []
        mb = info.get("bytes", 0) / 1e6
        print(f"  {info['file']:<40} {mb:9.1f} MB  {q}" + (f"  ({len(fb)} tensor(s) fell back)" if fb else ""))
    for q, rel in result["modelfiles"].items():
        print(f"  {rel}")
    ver = result.get("verification") or {}
    if ver:
        print(f"verification: {ver.get('status')}")
