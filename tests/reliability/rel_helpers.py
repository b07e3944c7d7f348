"""Helpers of the reliability suite (a plain module: test files import it by name)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> sha256 of its bytes ("dir" for folders, "link:<target>" for links). Comparing
    two digests catches a changed, added or removed file anywhere in the data root. A FIFO or device is named by
    its kind, never opened."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = f"link:{os.readlink(p)}" if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_symlink():
                out[str(p.relative_to(root))] = f"link:{os.readlink(p)}"
                continue
            if not p.is_file():  # a FIFO or a device: reading it could block forever, or never end
                out[str(p.relative_to(root))] = f"special:{stat.S_IFMT(os.lstat(p).st_mode):o}"
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            out[str(p.relative_to(root))] = h.hexdigest()
    return out


GOOD_ROWS = [{"messages": [{"role": "user", "content": f"question {i}?"},
                           {"role": "assistant", "content": f"answer {i}."}]} for i in range(4)]


def assert_clean_refusal(r, code: int, pattern: str) -> None:
    """A refusal as the issue-10 rule wants it: the documented exit code, no traceback or usage text, one line
    matching ``pattern``, exactly one ``error:`` line, and a ``hint:`` naming the fix (option errors, exit 2, may
    carry theirs inline)."""
    import re

    out = r.stdout + r.stderr
    shown = out[-3000:]
    assert r.returncode == code, f"exit {r.returncode}, expected {code}:\n{shown}"
    assert "Traceback" not in out and "usage:" not in out.lower(), shown
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert any(re.search(pattern, ln) for ln in lines), f"no line matches {pattern!r}:\n{shown}"
    assert sum(ln.startswith("error:") for ln in lines) == 1, shown
    assert any(ln.startswith("hint:") for ln in lines) or code == 2, f"no hint naming the fix:\n{shown}"
