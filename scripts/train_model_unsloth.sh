#!/usr/bin/env bash
# Kolo's train_model_unsloth.sh, kept for Kolo users: it now runs `kolo train`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./train_model_unsloth.sh -Epochs 3 -LearningRate 1e-4 -WeightDecay 0 -OutputDir my-run -Quantization Q4_K_M
exec "${KOLO:-kolo}" compat train_model_unsloth "$@"
