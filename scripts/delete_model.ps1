# Kolo's delete_model.ps1, kept for Kolo users: it now runs `kolo delete DIR`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./delete_model.ps1 my-run
& kolo compat delete_model @args
exit $LASTEXITCODE
