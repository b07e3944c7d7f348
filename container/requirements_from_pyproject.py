"""Print the requirements of kolo-trainer's extras, one per line, straight from container/pyproject.toml.

The Dockerfile installs through this script so that container/pyproject.toml stays THE one place where versions
are pinned: the image, scripts/install.sh and CI all read the same extras, and the image cannot drift from what
the tests install. (It exists because pip cannot install "only the dependencies of these extras" without the
package itself, and the image installs the dependencies in an early layer so a code change does not reinstall
torch.)

    python requirements_from_pyproject.py PYPROJECT EXTRA[,EXTRA...] [--only NAME ...] [--exclude NAME ...]

Stdlib only (tomllib, Python >= 3.11; the image's Python is 3.12).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib


def _name(req: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise ValueError(f"cannot read a name from requirement {req!r}")
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def requirements(pyproject: str, extras: list[str], only: list[str] = (), exclude: list[str] = ()) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; {pyproject} has {', '.join(optional)}")
    reqs = list(project.get("dependencies", []))
    for e in extras:
        reqs += optional[e]
    only_n = {_name(n) for n in only}
    excl_n = {_name(n) for n in exclude}
    out: list[str] = []
    for r in reqs:
        n = _name(r)
        if (only_n and n not in only_n) or n in excl_n or r in out:
            continue
        out.append(r)
    missing = only_n - {_name(r) for r in out}
    if missing:
        raise SystemExit(f"{', '.join(sorted(missing))} not in the extras {', '.join(extras)} of {pyproject}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pyproject")
    p.add_argument("extras", help="comma-separated extras, e.g. gpu,train,export")
    p.add_argument("--only", action="append", default=[], help="print only this distribution (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="leave this distribution out (repeatable)")
    a = p.parse_args(argv)
    extras = [e.strip() for e in a.extras.split(",") if e.strip()]
    print("\n".join(requirements(a.pyproject, extras, a.only, a.exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
