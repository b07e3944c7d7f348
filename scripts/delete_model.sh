#!/usr/bin/env bash
# Kolo's delete_model.sh, kept for Kolo users: it now runs `kolo delete DIR`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./delete_model.sh my-run
exec "${KOLO:-kolo}" compat delete_model "$@"
