# Kolo's build_image.ps1, kept for Kolo users: it now runs `kolo build`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./build_image.ps1
& kolo compat build_image @args
exit $LASTEXITCODE
