#!/usr/bin/env bash
# Kolo's connect.sh, kept for Kolo users: it now runs `kolo shell`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./connect.sh
exec "${KOLO:-kolo}" compat connect "$@"
