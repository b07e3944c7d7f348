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
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import typer
import typer.core
import typer.main
import typer.models

if TYPE_CHECKING:
    from kolo_trainer.spec import OptionInfo


def describe(model: type) -> list["OptionInfo"]:
    # spec imports pydantic: only when a command is actually built
    from kolo_trainer.spec import describe as _describe

    return _describe(model)

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


def _resolve_model(model: type | str) -> type:
    """``model`` itself, or the class named by ``"package.module:Class"`` (imported now, not at registration)."""
    if isinstance(model, str):
        import importlib

        mod, _, attr = model.partition(":")
        return getattr(importlib.import_module(mod), attr)
    return model


class LazyTyperGroup(typer.core.TyperGroup):
    """A root group that builds option-model commands only when one is run (or its own --help is shown).

    Building `kolo train` means importing pydantic and the option models and turning ~50 fields into click
    parameters: most of `kolo --help`'s time. The root help only needs each command's name, help and panel, so
    while the root help is formatted a lazy command is listed from a stub with no parameters.
    """

    lazy: dict[str, tuple[Callable[[], Callable[..., Any]], str, dict[str, Any]]]
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return names + [n for n in getattr(self, "lazy", {}) if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        lazy = getattr(self, "lazy", {})
        if cmd is not None or cmd_name not in lazy:
            return cmd
        build, help_text, kwargs = lazy[cmd_name]
        if self._listing:
            return typer.core.TyperCommand(cmd_name, help=help_text, rich_help_panel=kwargs.get("rich_help_panel"),
                                           hidden=bool(kwargs.get("hidden", False)))
        sub = typer.Typer(rich_markup_mode=self.rich_markup_mode, add_completion=False)
        sub.command(cmd_name, help=help_text, **kwargs)(build())
        cmd = typer.main.get_command(sub)
        cmd.name = cmd_name
        self.commands[cmd_name] = cmd
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            if ctx.parent is None:
                # The root listing is plain text, like git's and docker's: typer's rich help module imports
                # rich's markdown and traceback support (~100 ms, a third of `kolo --help`). Each command's own
                # --help (`kolo train --help`, with its option panels) stays rich.
                typer.core._click.Command.format_help(self, ctx, formatter)
            else:
                super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Commands grouped under their rich_help_panel, in registration order."""
        groups: dict[str, list[tuple[str, str]]] = {}
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            rows.append((name, cmd))
        limit = formatter.width - 6 - max((len(n) for n, _ in rows), default=0)
        for name, cmd in rows:
            panel = getattr(cmd, "rich_help_panel", None) or "Commands"
            groups.setdefault(panel, []).append((name, cmd.get_short_help_str(limit)))
        for panel, items in groups.items():
            with formatter.section(panel):
                formatter.write_dl(items)


def click_command(app: typer.Typer) -> Any:
    """The click command for ``app``, with the lazy commands registered by :func:`make_command` attached."""
    cmd = typer.main.get_command(app)
    if isinstance(cmd, LazyTyperGroup):
        cmd.lazy = dict(getattr(app, "_kolo_lazy", {}))
    return cmd


def _is_lazy(app: typer.Typer) -> bool:
    cls = getattr(app.info, "cls", None)
    return isinstance(cls, type) and issubclass(cls, LazyTyperGroup)


def make_command(
    app: typer.Typer,
    name: str,
    model: type | str,
    handler: Callable[..., Any],
    help: str,
    extra_params: list[inspect.Parameter] | None = None,
    **command_kwargs: Any,
) -> None:
    """Register command ``name`` on ``app`` with one flag per field of ``model`` plus ``extra_params``.

    ``model`` is the option class or ``"module:Class"``; with a string and an app created with
    ``cls=LazyTyperGroup`` (the `kolo` app), nothing is imported or built until the command runs.
    ``handler(flags, **extras)`` receives ``flags``: only the options actually given on the command line
    (``{"weight_decay": "0", "resume": False}``), values still as typed (pydantic validates them later), and the
    extra parameters by name. ``extra_params`` are ``inspect.Parameter`` objects whose defaults are
    ``typer.Option``/``typer.Argument`` (``typer.Argument`` ones become positional arguments, in the given order).
    """

    def build() -> Callable[..., Any]:
        return _build_command(name, _resolve_model(model), handler, help, list(extra_params or []))

    if _is_lazy(app):
        if not hasattr(app, "_kolo_lazy"):
            app._kolo_lazy = {}  # type: ignore[attr-defined]
        app._kolo_lazy[name] = (build, help, command_kwargs)  # type: ignore[attr-defined]
        return
    app.command(name, help=help, **command_kwargs)(build())


def _build_command(name: str, model: type, handler: Callable[..., Any], help: str,
                   extras: list[inspect.Parameter]) -> Callable[..., Any]:
    option_names = [i.name for i in describe(model)]
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
    return command
