# Kolo's copy_training_data.ps1, kept for Kolo users: it now runs `kolo data add FILE --as NAME`.
# Kolo's -Parameter names are mapped by kolo_cli/kolo_compat.py (one mapping for this and the .sh twin).
#   e.g. ./copy_training_data.ps1 -f chats.jsonl -d chats.jsonl
& kolo compat copy_training_data @args
exit $LASTEXITCODE
