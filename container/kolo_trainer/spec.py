"""The machinery behind kolo's option models: one pydantic field per option, everything else derived.

Each option is declared once, as a field of a pydantic model (see ``options.py``): name, type, default,
help text and constraints. From that single declaration this module derives

* the command-line flag (``lora_rank`` -> ``--lora-rank``) and the argv the host sends to the trainer,
* the trainer's own ``argparse`` parser (stdlib only, so the container needs nothing extra),
* the YAML config keys (the field names; dashes are accepted too),
* validation that reports *every* problem at once, phrased with the flag names a user typed,
* the manifest (``model_dump``).

The host CLI builds its typer options from :func:`describe` too (see ``kolo_cli.optionflags``).

Why not typer for everything: the trainer must parse the same argv inside the container without typer/rich,
and the host must be able to *emit* argv from merged YAML + flags. argparse is the stdlib parser that does the
first; :func:`to_argv` is the inverse of it and is tested as such (``parse(to_argv(x)) == x``).
"""

from __future__ import annotations

import argparse
import math
import reprlib
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import OptionsError


@dataclass(frozen=True)
class OptionInfo:
    """What a CLI needs to know about one option, derived from the pydantic field."""

    name: str  # python / YAML name: lora_rank
    flag: str  # --lora-rank
    kind: str  # "bool", "int", "float", "str", "list", "choice"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is an allowed value ("auto")
    group: str = "options"

    @property
    def negative_flag(self) -> str:
        return "--no-" + self.flag[2:]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def describe(model: type[BaseModel]) -> list[OptionInfo]:
    """Every option of ``model`` in declaration order."""
    out: list[OptionInfo] = []
    for name, field in model.model_fields.items():
        tp, optional = _unwrap_optional(field.annotation)
        choices: tuple[str, ...] = ()
        if tp is bool:
            kind = "bool"
        elif tp is int:
            kind = "int"
        elif tp is float:
            kind = "float"
        elif get_origin(tp) is Literal:
            kind, choices = "choice", tuple(str(a) for a in get_args(tp))
        elif get_origin(tp) is list:
            kind = "list"
        else:
            kind = "str"
        extra = field.json_schema_extra or {}
        default = field.get_default(call_default_factory=True)
        out.append(
            OptionInfo(
                name=name,
                flag=flag_name(name),
                kind=kind,
                default=default,
                help=field.description or "",
                choices=choices,
                optional=optional,
                group=str(extra.get("group", "options")) if isinstance(extra, dict) else "options",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- argv


def to_argv(model: type[BaseModel], values: dict[str, Any]) -> list[str]:
    """Turn explicitly-given option values into argv, the inverse of :func:`build_parser`.

    Only the keys present in ``values`` are emitted, in declaration order, so an explicit ``0`` or ``False``
    survives (it is a value, not "unset") and defaults stay the trainer's business. Every value travels glued to
    its flag (``--base-model=-h``): a value that starts with ``-`` is then data, never re-parsed as an option.
    """
    infos = {i.name: i for i in describe(model)}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        raise OptionsError([f"unknown option {u!r}" for u in unknown])
    argv: list[str] = []
    for name, info in infos.items():
        if name not in values:
            continue
        value = values[name]
        if value is None:
            continue  # None means "auto": the trainer's default already is auto
        if info.kind == "bool":
            argv.append(info.flag if value else info.negative_flag)
        elif info.kind == "list":
            argv += [f"{info.flag}={item}" for item in value]
        elif info.kind == "float":
            argv.append(f"{info.flag}={float(value)!r}")
        else:
            argv.append(f"{info.flag}={value}")
    return argv


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every caller gets an OptionsError."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise OptionsError([message])


def build_parser(model: type[BaseModel], prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose namespace holds only the options actually given (``argparse.SUPPRESS``)."""
    # allow_abbrev=False: a prefix of a flag is an error, not silently another option.
    p = _Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    for info in describe(model):
        if info.kind == "bool":
            p.add_argument(info.flag, dest=info.name, action=argparse.BooleanOptionalAction, help=info.help)
        elif info.kind == "list":
            p.add_argument(info.flag, dest=info.name, action="append", help=info.help)
        else:
            # Types are checked by pydantic afterwards so that all problems are reported together.
            p.add_argument(info.flag, dest=info.name, help=info.help, metavar=info.name.upper())
    return p


def pop_data_root(argv: list[str]) -> tuple[str, list[str]]:
    """Split the trainer-level ``--data-root`` flag (not an option-model field, see docs/design.md) from argv.

    Returns (data root, the rest). The default is ``$KOLO_DATA``, then ``./kolo_data``."""
    p = _Parser(add_help=False, allow_abbrev=False)
    p.add_argument("--data-root", default=None)
    ns, rest = p.parse_known_args(argv)
    return ns.data_root or os.environ.get("KOLO_DATA") or "./kolo_data", rest


def parse_argv(model: type[BaseModel], argv: list[str], prog: str = "kolo_trainer") -> tuple[BaseModel, dict]:
    """Parse trainer argv into a validated model; returns (model, explicit values)."""
    ns = build_parser(model, prog).parse_args(argv)
    explicit = vars(ns)
    return validate(model, explicit), explicit


# ---------------------------------------------------------------------------------------------- YAML


#: A config file is a short list of options: bound what is read and how far YAML aliases may expand, so a file
#: like /dev/zero or an alias bomb ("billion laughs") is refused instead of filling memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_ALIASES = 100


def _read_config(path: Path) -> str:
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise OptionsError([f"{path}: config file not found"]) from None
    except OSError as e:
        raise OptionsError([f"{path}: cannot read config ({e.strerror or e})"]) from None
    if not stat.S_ISREG(st.st_mode):
        raise OptionsError([f"{path}: not a regular file; give a YAML file"])
    if st.st_size > MAX_CONFIG_BYTES:
        raise OptionsError([f"{path}: {st.st_size} bytes is too big for a config file (at most {MAX_CONFIG_BYTES})"])
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CONFIG_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OptionsError([f"{path}: cannot read config ({e})"]) from None


def _count_aliases(yaml: Any, text: str, path: Path) -> None:
    n = sum(isinstance(ev, yaml.AliasEvent) for ev in yaml.parse(text, Loader=yaml.SafeLoader))
    if n > MAX_CONFIG_ALIASES:
        raise OptionsError([f"{path}: {n} YAML aliases (*name); a config file may use at most {MAX_CONFIG_ALIASES}"])


def load_yaml(model: type[BaseModel], path: str | Path) -> dict[str, Any]:
    """Read a YAML config; keys are option names (``lora_rank`` or ``lora-rank``). Unknown keys are errors."""
    import yaml  # PyYAML: light, and only needed when --config is used

    path = Path(path)
    text = _read_config(path)
    try:
        _count_aliases(yaml, text, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise OptionsError([f"{where}: invalid YAML ({problem})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionsError([f"{path}: a config file must be a mapping of option: value, got {type(data).__name__}"])
    known = {i.name for i in describe(model)}
    out: dict[str, Any] = {}
    problems = []
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            problems.append(f"{path}: unknown key {key!r} (see `kolo train --help` for the options)")
        else:
            out[name] = value
    if problems:
        raise OptionsError(problems)
    return out


# ---------------------------------------------------------------------------------------------- validation


def _describe_error(model: type[BaseModel], err: dict) -> str:
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else "?"
    flag = flag_name(name) if name in model.model_fields else name
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    given = _shown_value(err.get("input"))
    if err.get("type") == "extra_forbidden":
        return f"{flag}: unknown option"
    if err.get("type") == "missing":
        return f"{flag}: required"
    if not loc:  # a model validator (a rule across options): its message names the flags itself
        return msg
    return f"{flag}: {msg[0].lower() + msg[1:]} (got {given})"


def _shown_value(value: Any, limit: int = 80) -> str:
    """A value as a message shows it: repr, cut to ``limit`` characters (a config value can be huge)."""
    r = reprlib.Repr()  # attributes, not keywords: Python 3.11's Repr takes none
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 6, 6, 2
    text = r.repr(value)
    return text if len(text) <= limit + 10 else text[:limit] + "..."


def validate(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """Build ``model`` from ``values``; every problem is collected into one :class:`OptionsError`."""
    problems: list[str] = []
    floats = {i.name for i in describe(model) if i.kind == "float"}
    bad_floats = set()
    for name, value in values.items():
        if name not in floats:
            continue
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError):
            continue  # not a number at all: pydantic reports it
        if not finite:
            bad_floats.add(name)
            problems.append(f"{flag_name(name)}: must be a finite number (got {value!r})")
    try:
        result = model.model_validate(values)
    except ValidationError as e:
        problems += [_describe_error(model, err) for err in e.errors() if (err.get("loc") or ("",))[0] not in bad_floats]
        result = None
    if problems:
        raise OptionsError(sorted(set(problems), key=problems.index))
    assert result is not None
    return result


def merge(model: type[BaseModel], config: dict[str, Any], flags: dict[str, Any]) -> tuple[BaseModel, dict[str, Any]]:
    """Flags override config keys; returns (validated model, the explicit values that were given)."""
    given = {**config, **{k: v for k, v in flags.items() if v is not None}}
    result = validate(model, given)
    # Report the normalised values (Q4_K_M, 0.0) so argv and manifest show what will actually be used.
    return result, {k: getattr(result, k) for k in given}
