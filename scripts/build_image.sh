#!/usr/bin/env bash
# Kolo's build_image.sh, kept for Kolo users: it now runs `kolo build`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./build_image.sh
exec "${KOLO:-kolo}" compat build_image "$@"
