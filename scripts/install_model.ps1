# Kolo's install_model.ps1, kept for Kolo users: it now runs `kolo ollama-install NAME --output-dir DIR --quantization Q`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./install_model.ps1 my-model -OutputDir my-run -Quantization Q4_K_M
& kolo compat install_model @args
exit $LASTEXITCODE
