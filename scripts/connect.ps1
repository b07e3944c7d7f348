# Kolo's connect.ps1, kept for Kolo users: it now runs `kolo shell`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./connect.ps1
& kolo compat connect @args
exit $LASTEXITCODE
