"""Stage 3: quantise the 16-bit GGUF with ``llama_cpp.llama_model_quantize`` and report fallbacks.

llama.cpp picks a type per tensor: Q4_K_M is mostly q4_K with some q6_K (output, some attn_v/ffn_down) and q5_K
in a few architectures. When a tensor cannot take the wanted type (k-quants need rows that are a multiple of 256)
llama.cpp silently uses another one ("fallback": q5_0, q8_0 ...). The only honest report is to read the result:
every tensor's type from the GGUF (with the converter's own gguf-py reader), compared with the types the file type
may use. 1-D tensors (norms, biases) are never quantised and are not counted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ExportError
from . import converter

#: Tensor types a file type may legitimately contain (for 2-D+ weights).
EXPECTED: dict[str, set[str]] = {
    "F16": {"F16"},
    "BF16": {"BF16"},
    "Q8_0": {"Q8_0"},
    "Q6_K": {"Q6_K"},
    "Q5_K_M": {"Q5_K", "Q6_K"},
    "Q4_K_M": {"Q4_K", "Q5_K", "Q6_K"},
    "Q4_0": {"Q4_0", "Q4_1", "Q6_K"},  # llama.cpp keeps the output matrix at q6_K
}

#: The type most tensors of a file type get (used to say what a fallback replaced).
MAIN_TYPE = {"F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K",
             "Q4_0": "Q4_0"}


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """llama.cpp prints one line per tensor to fd 2; keep it out of the user's terminal, show it on failure."""
    out: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            out.extend(f.read().decode("utf-8", "replace").splitlines())


def quantize(src: Path, dst_tmp: Path, quant: str, threads: int | None = None) -> list[str]:
    """Quantise ``src`` (F16/BF16/F32 GGUF) into ``dst_tmp``; returns llama.cpp's log lines."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    if ftype is None:
        raise ExportError(f"this llama-cpp-python has no file type {quant}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    with _captured_stderr() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst_tmp).encode(), params)
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantise {src.name} to {quant} (code {rc}):\n  "
                          + "\n  ".join(log[-10:]))
    return log


def tensor_types(path: Path) -> list[tuple[str, str, int]]:
    """(name, type, n_dims) of every tensor in a GGUF."""
    gguf = converter.gguf_module()
    reader = gguf.GGUFReader(str(path))
    return [(t.name, t.tensor_type.name, len(t.shape)) for t in reader.tensors]


def report(path: Path, quant: str) -> dict:
    """Tensor type counts and the fallbacks (2-D+ tensors whose type the file type does not call for)."""
    types = tensor_types(path)
    counts = collections.Counter(t for _, t, nd in types if nd > 1)
    allowed = EXPECTED.get(quant, set())
    fallbacks = [{"tensor": name, "type": t, "expected": MAIN_TYPE.get(quant, quant)}
                 for name, t, nd in types if nd > 1 and t not in allowed]
    return {"tensor_types": dict(sorted(counts.items())), "fallbacks": fallbacks,
            "main_type_share": round(counts.get(MAIN_TYPE.get(quant, quant), 0) / max(1, sum(counts.values())), 4)}
