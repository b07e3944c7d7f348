"""Kolo's script names and parameters, translated into kolo verbs: the one mapping behind scripts/*.sh and *.ps1.

Kolo users type ``./train_model_unsloth.ps1 -Epochs 3 -LearningRate 1e-4`` (PowerShell) or
``./train_model_unsloth.sh -e 3 -l 1e-4`` (Kolo's bash getopts letters). Both shims are one line that forwards
their arguments, as an array, to ``kolo compat SCRIPT ...``; this module turns them into a kolo argv
(``train --epochs 3 --learning-rate 1e-4``) and runs it in-process. Why here and not in the shims: the mapping
is written once, in Python, where it is tested — PowerShell cannot run on these machines, so logic in a .ps1
would be code nobody ever ran.

Rules:
* A parameter counts when it is GIVEN, whatever its value: ``-WeightDecay 0`` becomes ``--weight-decay 0``
  (Kolo's ``if ($WeightDecay)`` dropped it and trained with 0.01).
* ``-Name value``, ``-Name:value`` (PowerShell) and ``--name=value`` are accepted; Kolo's long names are
  case-insensitive like PowerShell's, Kolo's one-letter bash flags are case-sensitive (``-s`` save steps,
  ``-S`` seed) like getopts.
* Everything after ``--`` is passed to kolo unchanged (``-- --dry-run``). Scripts that took no parameters in
  Kolo (build_image, create_and_run_container, run_container, list_models, connect) pass every argument on.
* ``KOLO_COMPAT_DRY_RUN=1`` prints the translated argv as JSON and runs nothing (the shim tests use it).
* An unknown parameter is refused with one line listing the known ones.

``kolo train`` accepts every TrainOptions field, so train_model_unsloth also accepts every field in Kolo's
PascalCase style (-Method full, -EvalSplit 0.05): the table is derived from the option definitions.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Optional

from kolo_trainer.errors import KoloError, OptionsError


@dataclass(frozen=True)
class Param:
    names: tuple[str, ...]          # "-Epochs", "-e", "--output-dir" ...
    flag: Optional[str]             # kolo flag; None = positional; "" = accepted but ignored (with a note)
    switch: bool = False            # takes no value
    negative: Optional[str] = None  # flag for an explicit false (-UseCheckpoint:$false)
    note: str = ""                  # said on stderr when the parameter is ignored


@dataclass
class Script:
    name: str
    verb: list[str]
    params: list[Param] = field(default_factory=list)
    positional: list[str] = field(default_factory=list)  # names of positional arguments, in order
    summary: str = ""
    passthrough: bool = False  # Kolo's script took no parameters: every argument goes to the kolo verb as-is


def _pascal(snake: str) -> str:
    return "".join(p.capitalize() for p in snake.split("_"))


#: Kolo's getopts letters in train_model_unsloth.sh (e:l:t:b:c:r:a:d:m:w:s:i:S:T:B:o:q:W:uf).
_KOLO_TRAIN_LETTERS = {"e": "epochs", "l": "learning_rate", "t": "train_data", "b": "base_model",
                       "c": "chat_template", "r": "lora_rank", "a": "lora_alpha", "d": "lora_dropout",
                       "m": "max_seq_length", "w": "warmup_steps", "s": "save_steps", "i": "save_total_limit",
                       "S": "seed", "T": "scheduler_type", "B": "batch_size", "o": "output_dir", "q": "quantization",
                       "W": "weight_decay"}


def _train_params() -> list[Param]:
    from kolo_trainer.options import TrainOptions
    from kolo_trainer.spec import describe

    letters: dict[str, list[str]] = {}
    for letter, name in _KOLO_TRAIN_LETTERS.items():
        letters.setdefault(name, []).append("-" + letter)
    out = []
    for info in describe(TrainOptions):
        names = ["-" + _pascal(info.name), info.flag, *letters.get(info.name, [])]
        if info.name == "resume":
            names += ["-UseCheckpoint", "-u"]  # Kolo's name for resuming from the last checkpoint
        if info.kind == "bool":
            out.append(Param(tuple(names), info.flag, switch=True, negative=info.negative_flag))
        else:
            out.append(Param(tuple(names), info.flag))
    # kolo train's own run options (not TrainOptions fields). -DryRun matters for PowerShell, which swallows `--`.
    out.append(Param(("-DryRun", "--dry-run"), "--dry-run", switch=True))
    out.append(Param(("-Config", "--config"), "--config"))
    out.append(Param(("-FastTransfer", "-f"), "", switch=True,
                     note="-FastTransfer is ignored: kolo downloads through huggingface_hub's default transfer"))
    return out


def scripts() -> dict[str, Script]:
    """Kolo's scripts and their kolo verbs."""
    tool = Param(("-Tool", "--tool", "-t"), "", note="-Tool is ignored: kolo has one output layout (outputs/<dir>)")
    return {s.name: s for s in [
        Script("build_image", ["build"], summary="kolo build", passthrough=True),
        Script("create_and_run_container", ["up"], summary="kolo up", passthrough=True),
        Script("run_container", ["start"], summary="kolo start", passthrough=True),
        Script("connect", ["shell"], summary="kolo shell (no SSH: docker exec)", passthrough=True),
        Script("list_models", ["list"], summary="kolo list", passthrough=True),
        Script("copy_training_data", ["data", "add"],
               [Param(("-LocalFile", "-f", "-File", "-Path"), None), Param(("-d", "-DestFile", "-As"), "--as")],
               positional=["LocalFile"], summary="kolo data add FILE --as NAME"),
        Script("train_model_unsloth", ["train"], _train_params(), summary="kolo train FLAGS"),
        Script("install_model", ["ollama-install"],
               [Param(("-ModelName", "-Name"), None),
                Param(("-OutputDir", "--output-dir", "-o"), "--output-dir"),
                Param(("-Quantization", "--quantization", "-q"), "--quantization"),
                Param(("-Ollama", "--ollama"), "--ollama"), tool],
               positional=["ModelName"], summary="kolo ollama-install NAME --output-dir DIR --quantization Q"),
        Script("uninstall_model", ["ollama-uninstall"],
               [Param(("-ModelName", "-Name"), None), Param(("-Ollama", "--ollama"), "--ollama")],
               positional=["ModelName"], summary="kolo ollama-uninstall NAME"),
        Script("delete_model", ["delete"],
               [Param(("-OutputDir", "-DirFolder", "--output-dir"), None), Param(("-Yes", "--yes", "-y"), "--yes",
                                                                                 switch=True), tool],
               positional=["OutputDir", "Tool"], summary="kolo delete DIR"),
    ]}


def _lookup(params: list[Param], token: str) -> Optional[Param]:
    for p in params:  # exact first: Kolo's getopts letters are case-sensitive (-s vs -S)
        if token in p.names:
            return p
    low = token.lower()
    for p in params:  # PowerShell parameter names are case-insensitive
        if any(len(n) > 2 and n.lower() == low for n in p.names):
            return p
    return None


def translate(script_name: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(kolo argv, notes) for Kolo's ``script_name`` called with ``args``. Raises OptionsError on bad input."""
    name = script_name.removesuffix(".sh").removesuffix(".ps1")
    table = scripts()
    if name not in table:
        raise KoloError(f"unknown Kolo script {script_name!r}; known: {', '.join(table)}")
    script = table[name]
    out: list[str] = list(script.verb)
    if script.passthrough:
        return out + (args[1:] if args[:1] == ["--"] else list(args)), []
    positional: list[str] = []
    named_positional: dict[str, str] = {}
    problems: list[str] = []
    notes: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            out += args[i:]
            break
        if not tok.startswith("-") or tok == "-" or _is_number(tok):
            positional.append(tok)
            continue
        key, value = tok, None
        if tok.startswith("--") and "=" in tok:
            key, value = tok.split("=", 1)
        elif not tok.startswith("--") and ":" in tok:
            key, value = tok.split(":", 1)  # PowerShell -Name:value (or "-Name:" followed by the value)
        p = _lookup(script.params, key)
        if p is None:
            known = sorted({n for p in script.params for n in p.names if not n.startswith("--")}, key=str.lower)
            problems.append(f"unknown parameter {key!r} for {name}" + (f" (known: {' '.join(known)})" if known
                                                                       else " (it takes no parameters)"))
            if value is None and i < len(args) and not args[i].startswith("-"):
                i += 1  # most likely its value: one problem reported, not two
            continue
        if p.switch:
            on = True
            if value not in (None, ""):
                v = value.strip().lstrip("$").lower()
                if v not in ("true", "false", "1", "0"):
                    problems.append(f"{key}: expected true or false, got {value!r}")
                    continue
                on = v in ("true", "1")
            if p.flag == "":
                notes.append(p.note)
            elif on or p.negative:
                out.append(p.flag if on else p.negative)
            continue
        if value in (None, ""):
            if i >= len(args):
                problems.append(f"{key} needs a value")
                continue
            value = args[i]
            i += 1
        if p.flag == "":
            notes.append(p.note)
        elif p.flag is None:
            named_positional[p.names[0].lstrip("-")] = value
        else:
            out += [p.flag, value]
    # positional parameters: given by name (-ModelName x) or by position, never both
    for pname in script.positional:
        if pname in named_positional:
            continue
        if positional:
            named_positional[pname] = positional.pop(0)
    if positional:
        problems.append(f"unexpected argument(s) for {name}: {' '.join(map(repr, positional))}")
    pos_values = []
    for pname in script.positional:
        if pname in named_positional:
            if pname == "Tool":
                notes.append("the Tool argument is ignored: kolo has one output layout (outputs/<dir>)")
                continue
            pos_values.append(named_positional[pname])
    out[len(script.verb):len(script.verb)] = pos_values
    if problems:
        raise OptionsError(problems, hint=f"{name} now runs `{script.summary}`; see `kolo {' '.join(script.verb)} "
                                          f"--help`")
    return out, notes


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


HELP_TOKENS = ("-h", "--help", "-Help", "-?")


def usage(script_name: str) -> str:
    name = script_name.removesuffix(".sh").removesuffix(".ps1")
    script = scripts().get(name)
    if script is None:
        raise KoloError(f"unknown Kolo script {script_name!r}; known: {', '.join(scripts())}")
    lines = [f"{name}: Kolo's script, now `{script.summary}`."]
    for p in script.params:
        target = ("(ignored)" if p.flag == "" else "(positional)" if p.flag is None else p.flag)
        lines.append(f"  {' '.join(n for n in p.names if not n.startswith('--')):<40} -> {target}")
    lines.append("  -- ARGS...                                -> passed to kolo unchanged (e.g. -- --dry-run)")
    return "\n".join(lines)


def run(script_name: str, args: list[str]) -> int:
    """Translate and run in this process; the translated command is shown on stderr so users learn the verbs."""
    from .cli import main
    from .state import STATE

    head = args[:args.index("--")] if "--" in args else args
    script = scripts().get(script_name.removesuffix(".sh").removesuffix(".ps1"))
    if script is not None and not script.passthrough and any(a in HELP_TOKENS for a in head):
        print(usage(script_name))
        return 0
    argv, notes = translate(script_name, args)
    if os.environ.get("KOLO_COMPAT_DRY_RUN") == "1":
        print(json.dumps(argv))
        return 0
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(f"kolo {shlex.join(argv)}", file=sys.stderr)
    return main((["--debug"] if STATE.debug else []) + argv)
