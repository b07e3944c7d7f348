#!/usr/bin/env bash
# Kolo's uninstall_model.sh, kept for Kolo users: it now runs `kolo ollama-uninstall NAME`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./uninstall_model.sh my-model
exec "${KOLO:-kolo}" compat uninstall_model "$@"
