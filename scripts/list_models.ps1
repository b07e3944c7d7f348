# Kolo's list_models.ps1, kept for Kolo users: it now runs `kolo list`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./list_models.ps1
& kolo compat list_models @args
exit $LASTEXITCODE
