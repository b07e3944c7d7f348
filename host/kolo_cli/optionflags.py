"""Typer options derived from the one option definition (``kolo_trainer.spec.describe``).

No option is written twice: name, help text and group come from the pydantic field. Two deliberate choices:

* Every default is ``None`` = "not given". Defaults stay the trainer's business, a YAML config can fill what the
  flags leave out, and an explicit ``--weight-decay 0`` is a value that survives into the argv.
* Numbers and choices are taken as text and checked by pydantic (``spec.merge``), not by click: click stops at the
  first bad value, pydantic reports every problem at once, phrased with the flag names.

:func:`make_command` builds a typer command from a model: ``kolo train`` uses it with TrainOptions and
``kolo export`` with ExportOptions.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional

import typer

from kolo_trainer.spec import OptionInfo, describe

_PANELS = {
    "data": "Data",
    "model": "Model",
    "lora": "LoRA",
    "schedule": "Schedule",
    "output": "Output",
    "options": "Options",
}


def _default_text(info: OptionInfo) -> str:
    d = info.default
    if d is None:
        return "auto"
    if isinstance(d, bool):
        return info.flag if d else info.negative_flag
    if isinstance(d, list):
        return " ".join(map(str, d)) if d else "none"
    return str(d)


def option_parameter(info: OptionInfo) -> inspect.Parameter:
    """One ``inspect.Parameter`` whose default is a ``typer.Option`` for ``info``."""
    help_text = info.help
    required = info.default is ... or (info.default is None and not info.optional)
    if not required:
        help_text += f" [default: {_default_text(info)}]"
    panel = _PANELS.get(info.group, info.group.title())
    if info.kind == "bool":
        decl = f"{info.flag}/{info.negative_flag}"
        annotation: Any = Optional[bool]
        opt = typer.Option(None, decl, help=help_text, show_default=False, rich_help_panel=panel)
    elif info.kind == "list":
        annotation = Optional[List[str]]
        opt = typer.Option(None, info.flag, help=help_text + " (repeatable)", show_default=False,
                           metavar="TEXT", rich_help_panel=panel)
    else:
        metavar = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT"}.get(info.kind, "TEXT")
        if info.kind == "choice":
            metavar = "|".join(info.choices)
        annotation = Optional[str]
        opt = typer.Option(None, info.flag, help=help_text, show_default=False, metavar=metavar,
                           rich_help_panel=panel)
    return inspect.Parameter(info.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation)


def make_command(
    app: typer.Typer,
    name: str,
    model: type,
    handler: Callable[..., Any],
    help: str,
    extra_params: list[inspect.Parameter] | None = None,
    **command_kwargs: Any,
) -> Callable[..., Any]:
    """Register command ``name`` on ``app`` with one flag per field of ``model`` plus ``extra_params``.

    ``handler(flags, **extras)`` receives ``flags``: only the options actually given on the command line
    (``{"weight_decay": "0", "resume": False}``), values still as typed (pydantic validates them later), and the
    extra parameters by name. ``extra_params`` are ``inspect.Parameter`` objects whose defaults are
    ``typer.Option``/``typer.Argument`` (``typer.Argument`` ones become positional arguments, in the given order).
    """
    option_names = [i.name for i in describe(model)]
    extras = list(extra_params or [])
    clash = set(option_names) & {p.name for p in extras}
    if clash:
        raise ValueError(f"extra parameters clash with {model.__name__} fields: {sorted(clash)}")
    # typer tells arguments from options by the default (ArgumentInfo vs OptionInfo), not by the parameter kind,
    # so everything can be keyword-only; arguments keep their relative order by coming first.
    kw = inspect.Parameter.KEYWORD_ONLY
    arguments = [p.replace(kind=kw) for p in extras if isinstance(p.default, typer.models.ArgumentInfo)]
    options = [p.replace(kind=kw) for p in extras if not isinstance(p.default, typer.models.ArgumentInfo)]
    params = arguments + [option_parameter(i) for i in describe(model)] + options
    extra_names = [p.name for p in extras]

    def command(**kwargs: Any) -> Any:
        flags = {k: kwargs[k] for k in option_names if kwargs.get(k) is not None}
        # typer passes an empty list for a repeatable option that was not given: that is "not given" too.
        flags = {k: v for k, v in flags.items() if not (isinstance(v, (list, tuple)) and len(v) == 0)}
        flags = {k: list(v) if isinstance(v, tuple) else v for k, v in flags.items()}
        return handler(flags, **{k: kwargs.get(k) for k in extra_names})

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help
    app.command(name, help=help, **command_kwargs)(command)
    return command
