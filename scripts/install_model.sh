#!/usr/bin/env bash
# Kolo's install_model.sh, kept for Kolo users: it now runs `kolo ollama-install NAME --output-dir DIR --quantization Q`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./install_model.sh my-model -OutputDir my-run -Quantization Q4_K_M
exec "${KOLO:-kolo}" compat install_model "$@"
