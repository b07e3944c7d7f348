"""Docs that cannot drift: the verbs in README.md's verb table and in docs/design.md's layout are exactly the verbs of
`kolo --help`, and every flag the README shows for `kolo train` / `kolo export` exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def help_verbs() -> set[str]:
    import contextlib
    import io

    from kolo_cli.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["--help"]) == 0
    section = buf.getvalue().split("Options:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^  ([a-z][a-z-]*)\s{2,}", section, re.M)}


def readme_table_verbs() -> set[str]:
    text = (REPO / "README.md").read_text()
    table = text.split("### Verbs", 1)[1].split("\n\n", 2)[1]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `kolo")]
    return {m for cell in first_cells for m in re.findall(r"`kolo ([a-z][a-z-]*)", cell)}


def design_verbs() -> set[str]:
    text = (REPO / "docs" / "design.md").read_text()
    block = text.split("kolo_cli/commands/", 1)[1].split("kolo_cli/pipeline.py", 1)[0]
    # "data.py (data add/check/list)": a word with '/' lists a group's subcommands, not verbs
    return {w for group in re.findall(r"\.py \(([^)]*)\)", block) for w in group.split() if "/" not in w}


def test_readme_and_design_list_exactly_the_verbs_of_kolo_help() -> None:
    verbs = help_verbs()
    assert {"train", "export", "chat", "data", "list", "delete"} <= verbs, verbs
    assert readme_table_verbs() == verbs, "README.md's verb table and `kolo --help` disagree"
    assert design_verbs() == verbs, "docs/design.md's commands/ layout and `kolo --help` disagree"


def _flags_in_readme_lines(verb: str) -> set[str]:
    flags = set()
    for line in (REPO / "README.md").read_text().splitlines():
        for cmd in re.findall(rf"kolo {verb}\b[^`|#\n]*", line):
            flags |= set(re.findall(r"(--[a-z][a-z-]*)", cmd))
    return flags


def test_flags_shown_in_the_readme_exist() -> None:
    from kolo_trainer import spec
    from kolo_trainer.options import ExportOptions, TrainOptions

    def known(model: type) -> set[str]:
        out = set()
        for info in spec.describe(model):
            out |= {info.flag} | ({info.negative_flag} if info.kind == "bool" else set())
        return out

    common = {"--help", "--dry-run", "--data-root", "--runtime", "--container", "--debug"}
    for verb, model, extra in (("train", TrainOptions, {"--config"}), ("export", ExportOptions, set())):
        unknown = _flags_in_readme_lines(verb) - known(model) - common - extra
        assert not unknown, f"README shows `kolo {verb}` flags that do not exist: {sorted(unknown)}"
