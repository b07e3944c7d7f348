"""``python -m kolo_trainer export --output-dir RUN [options] --data-root ROOT``: the export verb.

Reads ``<root>/outputs/RUN/kolo.json`` (written by training) and runs the stages in order, each skipped when its
outputs are up to date (``stages.Context.up_to_date``):

    merge (LoRA -> <run>/merged, 16-bit)  ->  convert (-> gguf/RUN-F16.gguf)  ->  quantize (-> gguf/RUN-Q.gguf)
    ->  Modelfile per GGUF (gguf/Modelfile.Q)  ->  verify

With ``--adapter-only`` the LoRA becomes a GGUF adapter (gguf/RUN-lora-F16.gguf) and the base model is converted
(and quantised) on its own (gguf/RUN-base-Q.gguf); each Modelfile then says ``FROM ./RUN-base-Q.gguf`` +
``ADAPTER ./RUN-lora-F16.gguf``: Ollama needs the base as a file, and converting the exact base the adapter was
trained on is the only way to be sure it is the same model.

The manifest's ``export.quantizations`` / ``modelfiles`` list what the latest export produced: ask for every
quantisation you want each time (the ones already done are skipped, so that costs nothing). Files of an earlier
export with other quantisations are left alone but no longer listed (they may come from older weights).

Every final file is written under ``.tmp-<pid>-...`` in the same folder and renamed into place, so a crash or
Ctrl-C never leaves a partial file under a final name; the next run removes the leftovers (it holds the run's
lock, so no other process can be writing them) and completes the job.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import manifest, progress, spec
from ..errors import ExportError, OptionsError, VerificationError
from ..options import ExportOptions
from ..runfolder import DataRoot
from . import ollama_template, stages



def method_of(data: dict) -> str:
    return str(data.get("method") or (data.get("options") or {}).get("method") or "lora")


def run(argv: list[str]) -> int:
    root_s, rest = spec.pop_data_root(list(argv))
    opts, _explicit = spec.parse_argv(ExportOptions, rest, prog="python -m kolo_trainer export")
    assert isinstance(opts, ExportOptions)
    root = DataRoot(root_s).check(writable=True)
    run = root.run(opts.output_dir, "output dir")
    data = run.require(finished=True, verb="export", error=ExportError)
    run_dir = run.path
    method = method_of(data)
    problems = []
    if opts.adapter_only and method == "full":
        problems.append("--adapter-only: run was fully fine-tuned (method full), there is no adapter to export")
    if method in ("lora", "qlora") and not (run_dir / "adapter" / "adapter_config.json").is_file():
        problems.append(f"{run_dir / 'adapter'}: no LoRA adapter (adapter_config.json) in this run")
    if opts.adapter_only and (run_dir / "adapter" / "adapter_config.json").is_file():
        import json

        acfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
        if acfg.get("modules_to_save"):
            # A GGUF LoRA holds lora_A/lora_B pairs only; llama.cpp's converter exits on fully trained modules.
            problems.append(f"--adapter-only: the adapter also trains {', '.join(acfg['modules_to_save'])} in full "
                            "(modules_to_save), which a GGUF LoRA adapter cannot hold; export the merged model "
                            "(without --adapter-only)")
    if method == "full" and not (run_dir / "model" / "config.json").is_file():
        problems.append(f"{run_dir / 'model'}: no fine-tuned model (config.json) in this run")
    if problems:
        raise OptionsError(problems)

    with run.lock():
        ctx = stages.Context(root=root.path, run_dir=run_dir, name=opts.output_dir, opts=opts, data=data,
                             stages=dict((data.get("export") or {}).get("stages") or {}))
        # Leftovers of a crashed export (we hold the lock: nobody else is writing them).
        for folder in (run_dir, ctx.gguf_dir):
            for p in manifest.clean_stale_tmp(folder):
                progress.emit("warning", message=f"removed the leftover of an interrupted export: {ctx.rel(p)}")
        t0 = time.monotonic()
        ctx.save(status="running", options=opts.model_dump(), started=manifest.now())
        try:
            result = _pipeline(ctx, method)
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            try:
                ctx.save(status=status, error=str(e)[:2000])
            except Exception:  # never hide the real error behind a manifest write problem
                pass
            raise
        ctx.save(status="finished", error=None, total_s=round(time.monotonic() - t0, 2), **result)
    progress.emit("result", stage="export", run=opts.output_dir, gguf=result["quantizations"],
                  modelfiles=result["modelfiles"], verification=(result.get("verification") or {}).get("status"))
    _print_summary(ctx, result)
    ver = result.get("verification") or {}
    if ver.get("status") == "failed":
        raise VerificationError("export verification failed:\n  " + "\n  ".join(ver.get("problems", [])),
                                "the GGUF files are written; see export.verification in kolo.json for details")
    return 0


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


def _pipeline(ctx: stages.Context, method: str) -> dict:
    from . import convert, converter, modelfile, quantize

    opts = ctx.opts
    conv_dir = converter.ensure()
    ctx.save(converter={"version": converter.installed_version(), "path": str(conv_dir)})
    quants = list(dict.fromkeys(["F16", *opts.quantization]))
    adapter_dir = ctx.run_dir / "adapter"

    # ---------------------------------------------------------------- merge
    if opts.adapter_only:
        from .merge import resolve_base

        model_dir = Path(resolve_base(ctx))
        if not model_dir.is_dir():
            raise ExportError(f"--adapter-only needs the base model as a local folder, not {str(model_dir)!r}")
        stages.skipped("merge", "adapter only")
        prefix = f"{ctx.name}-base"
    elif method == "full":
        model_dir = ctx.run_dir / "model"
        stages.skipped("merge", "full fine-tune: converting <run>/model")
        prefix = ctx.name
    else:
        model_dir = _merge_stage(ctx, adapter_dir)
        prefix = ctx.name

    def gguf_path(q: str) -> Path:
        return ctx.gguf_dir / f"{prefix}-{q}.gguf"

    # ---------------------------------------------------------------- convert (F16, BF16)
    model_fp = stages.tree_sig(model_dir)
    conv_version = converter.installed_version()
    for q in [q for q in quants if q in ("F16", "BF16")]:
        out = gguf_path(q)
        fp = {"model": model_fp, "converter": conv_version, "outtype": q}
        key = f"convert:{q}"
        with stages.stage("convert", detail=f"{ctx.rel(out)}") as st:
            if ctx.up_to_date(key, fp):
                st.update(skip=True, detail=f"{ctx.rel(out)} is up to date")
            else:
                t = time.monotonic()
                with stages.atomic_file(out, f"convert-{q}.gguf") as tmp:
                    convert.to_gguf(model_dir, tmp, q.lower(), stage="convert")
                ctx.record(key, fp, [out], seconds=round(time.monotonic() - t, 3))

    # ---------------------------------------------------------------- adapter (adapter-only)
    adapter_gguf = None
    if opts.adapter_only:
        adapter_gguf = ctx.gguf_dir / f"{ctx.name}-lora-F16.gguf"
        fp = {"adapter": stages.tree_sig(adapter_dir), "base": model_fp, "converter": conv_version}
        with stages.stage("convert", detail=ctx.rel(adapter_gguf)) as st:
            if ctx.up_to_date("convert:lora", fp):
                st.update(skip=True, detail=f"{ctx.rel(adapter_gguf)} is up to date")
            else:
                t = time.monotonic()
                with stages.atomic_file(adapter_gguf, "convert-lora.gguf") as tmp:
                    convert.lora_to_gguf(adapter_dir, model_dir, tmp, "f16", stage="convert")
                ctx.record("convert:lora", fp, [adapter_gguf], seconds=round(time.monotonic() - t, 3))

    # ---------------------------------------------------------------- quantize
    src = gguf_path("F16")
    todo = [q for q in quants if q not in ("F16", "BF16")]
    for i, q in enumerate(todo):
        out = gguf_path(q)
        fp = {"src": stages.file_sig(src), "quant": q, "llama_cpp": conv_version}
        key = f"quantize:{q}"
        with stages.stage("quantize", detail=f"{q} ({i + 1}/{len(todo)})") as st:
            if ctx.up_to_date(key, fp):
                st.update(skip=True, detail=f"{ctx.rel(out)} is up to date")
            else:
                t = time.monotonic()
                with stages.atomic_file(out, f"quantize-{q}.gguf") as tmp:
                    quantize.quantize(src, tmp, q)
                ctx.record(key, fp, [out], seconds=round(time.monotonic() - t, 3))
            progress.emit("progress", stage="quantize", step=i + 1, total=len(todo))

    quant_info: dict[str, dict] = {}
    for q in quants:
        p = gguf_path(q)
        rep = quantize.report(p, q)
        quant_info[q] = {"file": ctx.rel(p), "bytes": p.stat().st_size, **rep}
        if rep["fallbacks"] and q not in ("F16", "BF16"):
            shown = ", ".join(f"{f['tensor']} -> {f['type']}" for f in rep["fallbacks"][:6])
            more = len(rep["fallbacks"]) - 6
            progress.emit("warning", message=f"{q}: {len(rep['fallbacks'])} tensor(s) fell back to another type "
                          f"than {quantize.MAIN_TYPE[q]}: {shown}" + (f" and {more} more" if more > 0 else "")
                          + " (k-quants need rows that are a multiple of 256)")
    if adapter_gguf is not None:
        quant_info["LORA"] = {"file": ctx.rel(adapter_gguf), "bytes": adapter_gguf.stat().st_size}
    ctx.save(quantizations=quant_info)

    # ---------------------------------------------------------------- Modelfiles
    mf_settings = ollama_template.settings(ctx)
    if mf_settings["warning"]:
        progress.emit("warning", message=mf_settings["warning"])
    modelfiles: dict[str, str] = {}
    with stages.stage("modelfile", detail=f"{len(quants)} Modelfile(s)") as st:
        written = 0
        for q in quants:
            name = f"Modelfile.{q}"
            text = modelfile.render(
                gguf_file=gguf_path(q).name, adapter_file=adapter_gguf.name if adapter_gguf else None,
                template=mf_settings["template"], stop=mf_settings["stop"], num_ctx=mf_settings["num_ctx"],
                system=mf_settings["system"], temperature=opts.temperature, top_p=opts.top_p,
                model_name=_ollama_name(ctx.name, q), modelfile_name=name, template_note=mf_settings["warning"])
            modelfile.parse(text)  # what Ollama will read must parse (raises otherwise)
            final = ctx.gguf_dir / name
            if not final.is_file() or final.read_text(encoding="utf-8") != text:
                with stages.atomic_file(final, name) as tmp:
                    tmp.write_text(text, encoding="utf-8")
                written += 1
            modelfiles[q] = ctx.rel(final)
        st["detail"] = f"{written} written, {len(quants) - written} unchanged"
    ctx.save(modelfiles=modelfiles, template={k: v for k, v in mf_settings.items() if k != "template"})

    result = {"quantizations": quant_info, "modelfiles": modelfiles}

    # ---------------------------------------------------------------- verify
    if opts.verify:
        from . import verify

        files = {q: gguf_path(q) for q in quants}
        fp = {"gguf": {q: stages.file_sig(p) for q, p in files.items()},
              "modelfiles": {q: stages.file_sig(ctx.run_dir / r) for q, r in modelfiles.items()},
              "adapter": stages.file_sig(adapter_gguf) if adapter_gguf else None,
              "reference": stages.tree_sig(model_dir if not opts.adapter_only else adapter_dir)}
        prev = (ctx.data.get("export") or {}).get("verification") or {}
        with stages.stage("verify") as st:
            if ctx.up_to_date("verify", fp) and prev.get("status") in ("passed", "passed with warnings"):
                st.update(skip=True, detail=f"up to date ({prev.get('status')})")
                result["verification"] = prev
            else:
                t_ver = time.monotonic()
                try:
                    ver = verify.verify_all(ctx, files=files, modelfiles=modelfiles, reference_dir=model_dir,
                                            adapter_dir=adapter_dir if opts.adapter_only else None,
                                            adapter_gguf=adapter_gguf, settings=mf_settings)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # the files are written; a crashing check is a failed check, reported
                    ver = {"status": "failed", "warnings": [],
                           "problems": [f"verification could not run: {type(e).__name__}: {e}"]}
                result["verification"] = ver
                ctx.save(verification=ver)
                ctx.record("verify", fp, [], status=ver["status"], seconds=round(time.monotonic() - t_ver, 3))
                st["detail"] = ver["status"]
    else:
        stages.skipped("verify", "--no-verify")
        result["verification"] = {"status": "skipped: --no-verify"}
    manifest.add_artifacts(ctx.run_dir, [ctx.run_dir / info["file"] for info in quant_info.values()]
                           + [ctx.run_dir / r for r in modelfiles.values()])
    return result


def _ollama_name(run: str, quant: str) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "-" for c in run.lower()).strip("-.") or "kolo-model"
    return f"{base}:{quant.lower()}"


def _merge_stage(ctx: stages.Context, adapter_dir: Path) -> Path:
    from . import merge

    out = ctx.run_dir / "merged"
    base = merge.resolve_base(ctx)
    fp = {"adapter": stages.tree_sig(adapter_dir), "base": merge.base_fingerprint(base, ctx),
          "chat_template": (ctx.data.get("chat_template") or {}).get("jinja")}
    with stages.stage("merge", detail=f"adapter + {base}") as st:
        if ctx.up_to_date("merge", fp) and (out / "config.json").is_file():
            st.update(skip=True, detail="merged/ is up to date")
            return out
        t = time.monotonic()
        with manifest.atomic_path(out) as tmp:
            merge.merge(ctx, adapter_dir, base, tmp)
        ctx.record("merge", fp, [p for p in sorted(out.rglob("*")) if p.is_file()],
                   seconds=round(time.monotonic() - t, 3))
    return out
