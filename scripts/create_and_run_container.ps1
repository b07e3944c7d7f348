# Kolo's create_and_run_container.ps1, kept for Kolo users: it now runs `kolo up`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./create_and_run_container.ps1
& kolo compat create_and_run_container @args
exit $LASTEXITCODE
