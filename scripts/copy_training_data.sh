#!/usr/bin/env bash
# Kolo's copy_training_data.sh, kept for Kolo users: it now runs `kolo data add FILE --as NAME`.
# Kolo's parameter names still work (and kolo's own flags; anything after -- reaches kolo unchanged). They are
# mapped in one place, kolo_cli/kolo_compat.py, for this shim and the .ps1 twin. Arguments travel as an array.
#   e.g. ./copy_training_data.sh -f chats.jsonl -d chats.jsonl
exec "${KOLO:-kolo}" compat copy_training_data "$@"
