# Kolo's train_model_unsloth.ps1, kept for Kolo users: it now runs `kolo train`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./train_model_unsloth.ps1 -Epochs 3 -LearningRate 1e-4 -WeightDecay 0 -OutputDir my-run -Quantization Q4_K_M
& kolo compat train_model_unsloth @args
exit $LASTEXITCODE
