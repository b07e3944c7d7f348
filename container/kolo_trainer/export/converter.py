"""The llama.cpp GGUF converter that matches the installed llama-cpp-python, taken from that version's sdist.

``python -m kolo_trainer.export.converter install``  extract it (offline when the sdist is cached)
``python -m kolo_trainer.export.converter path``     print where it is (exit 1 when not installed)

Why the sdist: llama-cpp-python's source distribution carries ``vendor/llama.cpp/convert_hf_to_gguf.py``, its
``conversion/`` package and ``gguf-py/``: exactly the converter of the llama.cpp that the installed wheel was
compiled from. A git clone at run time (Kolo's old way) needs GitHub and drifts from the runtime; the PyPI ``gguf``
package is a different version and does not work with this converter (../shared/ENVIRONMENT.md).

Where it goes: ``<venv>/share/kolo/converter/<version>/`` -- inside the Python environment whose llama-cpp-python
it matches. The environment decides the version, so the two live and die together: a new venv (or a new
llama-cpp-python) can never pick up a stale converter, and an environment that is copied or bind-mounted into
the container (the Docker image, the docker test suite's read-only venv mount) carries its converter along,
where ``~/.cache`` would not be there. When the environment is not writable, ``${KOLO_CACHE:-~/.cache/kolo}/
converter/<version>/`` is used instead. The sdist itself (the only download) is cached in ``${KOLO_CACHE}/sdist``.
``KOLO_CONVERTER=DIR`` overrides both (a converter folder laid out as below).

Layout of a converter folder: ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` (when the sdist has it),
``conversion/``, ``gguf-py/`` and ``kolo-converter.json`` (version + sdist sha256), written last: a folder
without it is incomplete and is replaced. The folder is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .. import manifest
from ..errors import ExportError

DIST = "llama-cpp-python"
MARKER = "kolo-converter.json"
#: What is taken from ``vendor/llama.cpp/`` in the sdist (files and folders).
MEMBERS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")
REQUIRED = ("convert_hf_to_gguf.py", "conversion", "gguf-py/gguf")


def installed_version() -> str:
    """The installed llama-cpp-python version (the converter must match it exactly)."""
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ExportError("llama-cpp-python is not installed in this Python environment",
                          "install kolo with `bash scripts/install.sh` (or pip install "
                          "'kolo-trainer[export]')") from None


def cache_root() -> Path:
    env = os.environ.get("KOLO_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kolo"


def venv_dir(version: str) -> Path:
    return Path(sys.prefix) / "share" / "kolo" / "converter" / version


def cache_dir(version: str) -> Path:
    return cache_root() / "converter" / version


def sdist_path(version: str) -> Path:
    return cache_root() / "sdist" / f"llama_cpp_python-{version}.tar.gz"


def _complete(d: Path, version: str) -> bool:
    try:
        info = json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == version and all((d / r).exists() for r in REQUIRED)


def path(version: str | None = None) -> Path | None:
    """The installed converter folder for ``version`` (default: the installed llama-cpp-python), or None."""
    env = os.environ.get("KOLO_CONVERTER")
    if env:
        return Path(env) if (Path(env) / "convert_hf_to_gguf.py").is_file() else None
    version = version or installed_version()
    for d in (venv_dir(version), cache_dir(version)):
        if _complete(d, version):
            return d
    return None


def _writable(d: Path) -> bool:
    """True when ``d`` (or its nearest existing parent) can be written."""
    p = d
    while not p.exists():
        p = p.parent
    return os.access(p, os.W_OK)


def fetch_sdist(version: str) -> Path:
    """The cached sdist; downloaded with pip (sdist only, no deps) when it is not cached yet."""
    sd = sdist_path(version)
    if sd.is_file():
        return sd
    sd.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading the llama-cpp-python {version} source distribution (for its GGUF converter) ...",
          file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "--dest", str(sd.parent), f"{DIST}=={version}"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not sd.is_file():
        tail = "\n".join(r.stdout.strip().splitlines()[-5:])
        raise ExportError(f"could not download the llama-cpp-python {version} sdist into {sd.parent}:\n{tail}",
                          f"put llama_cpp_python-{version}.tar.gz into {sd.parent} (the same file "
                          "scripts/install.sh builds the wheel from) and run "
                          "`python -m kolo_trainer.export.converter install` again")
    return sd


def install(version: str | None = None, force: bool = False) -> Path:
    """Extract the converter for ``version`` from its sdist; returns the folder. A no-op when already there."""
    version = version or installed_version()
    if not force and (found := path(version)) is not None:
        return found
    target = venv_dir(version) if _writable(venv_dir(version)) else cache_dir(version)
    sd = fetch_sdist(version)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    wanted = tuple(prefix + m for m in MEMBERS)
    sha = manifest.sha256_file(sd)
    found_members: set[str] = set()
    if target.parent.exists():
        manifest.clean_stale_tmp(target.parent)  # leftovers of an install that was killed
    with manifest.atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        try:
            # Streaming mode: one pass over the 70+ MB archive.
            with tarfile.open(sd, "r|gz") as tar:
                for m in tar:
                    if not m.name.startswith(wanted) or not (m.isfile() or m.isdir()):
                        continue
                    rel = m.name[len(prefix):]
                    found_members.add(rel.split("/")[0] + ("/" if "/" in rel else ""))
                    dest = tmp / rel
                    if m.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                        continue
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(m)
                    assert src is not None
                    with open(dest, "wb") as f:
                        while block := src.read(1 << 20):
                            f.write(block)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ExportError(f"{sd}: cannot read the sdist ({e})",
                              f"delete {sd} and run `python -m kolo_trainer.export.converter install` again") from None
        missing = [r for r in REQUIRED if not (tmp / r).exists()]
        if missing:
            raise ExportError(f"{sd} has no {', '.join('vendor/llama.cpp/' + r for r in missing)}; "
                              "this llama-cpp-python version does not carry the GGUF converter kolo needs")
        (tmp / MARKER).write_text(json.dumps({
            "version": version, "sdist": sd.name, "sdist_sha256": sha,
            "lora_converter": (tmp / "convert_lora_to_gguf.py").is_file(),
        }, indent=2) + "\n")
    return target


def ensure() -> Path:
    """The converter folder, installing it first when needed (offline when the sdist is cached)."""
    return path() or install()


def gguf_module(converter_dir: Path | None = None):
    """Import the converter's own ``gguf`` package (gguf-py), never a PyPI ``gguf`` of another version."""
    d = (converter_dir or ensure()) / "gguf-py"
    loaded = sys.modules.get("gguf")
    if loaded is not None:
        origin = Path(getattr(loaded, "__file__", "") or "").resolve()
        if d.resolve() not in origin.parents:
            raise ExportError(f"another gguf package is already imported ({origin}); kolo needs the one "
                              f"matching llama-cpp-python ({d})")
        return loaded
    sys.path.insert(0, str(d))
    try:
        import gguf  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(d))
    return gguf


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m kolo_trainer.export.converter",
                                description="The llama.cpp GGUF converter matching the installed llama-cpp-python.")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="extract it from the cached (or downloaded) sdist")
    i.add_argument("--force", action="store_true", help="extract again even when it is installed")
    sub.add_parser("path", help="print the converter folder (exit 1 when it is not installed)")
    a = p.parse_args(argv)
    from ..errors import KoloError

    try:
        if a.cmd == "install":
            d = install(force=a.force)
            print(f"llama.cpp converter for llama-cpp-python {installed_version()}: {d}")
        else:
            d = path()
            if d is None:
                print("not installed; run `python -m kolo_trainer.export.converter install`", file=sys.stderr)
                return 1
            print(d)
    except KoloError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
