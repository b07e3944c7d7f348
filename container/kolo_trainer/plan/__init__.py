"""``kolo plan``: will a training run fit, before anything is loaded.

From config.json alone (a model folder under the data root, or the local Hugging Face cache) and the options:
parameters and trainable parameters, peak GPU memory (or RAM on CPU) split into weights, adapters, gradients,
optimizer states and activations, host RAM, disk (checkpoints, saved model, merged model, GGUFs), a rough time per
epoch, the verdict for this machine and the changes that make it fit. ``preflight.train`` runs the same estimate
before every training run; the trainer records it next to what it measured (kolo.json ``plan``).

Light: stdlib (plus the option model and kolo's stdlib data loader; the tokenizers / sentencepiece libraries when
present, for the token count); never weights, transformers, torch or the network.
The formulas and their sources are in the modules: arch (parameters), memory, disk.
"""

from __future__ import annotations

from .estimate import Plan, make, to_dict
from .machine import Machine, detect

__all__ = ["Plan", "make", "to_dict", "Machine", "detect"]
