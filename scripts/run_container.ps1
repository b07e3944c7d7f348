# Kolo's run_container.ps1, kept for Kolo users: it now runs `kolo start`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./run_container.ps1
& kolo compat run_container @args
exit $LASTEXITCODE
