# Kolo's uninstall_model.ps1, kept for Kolo users: it now runs `kolo ollama-uninstall NAME`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./uninstall_model.ps1 my-model
& kolo compat uninstall_model @args
exit $LASTEXITCODE
