#!/usr/bin/env bash
# The README's first command: install kolo for CPU and run the whole job once, end to end, on an embedded default.
#
#   bash scripts/demo.sh
#
# 1. scripts/install.sh (a .venv with kolo; the first install compiles llama-cpp-python, later ones reuse the
#    cached wheel)
# 2. a tiny model built locally (kolo_trainer.tiny: a random-init Llama with a SentencePiece tokenizer, hidden
#    256). It is a TOY: it only proves the pipeline. It memorises the bundled example dataset and knows nothing else.
# 3. the bundled example dataset (kolo_trainer/assets/example.jsonl, written by the kolo authors) -> data/
# 4. kolo train with the demo config (kolo_trainer/assets/demo.yaml)
# 5. kolo export: F16 + Q4_K_M GGUFs, one Ollama Modelfile each, verified (token ids, greedy output and the
#    Modelfile TEMPLATE against the trained model)
# 6. kolo chat --prompt "What is kolo?": one answer from the Q4_K_M GGUF through its Modelfile
#
# Everything runs locally (--runtime local), no GPU, no Docker, no download besides the install.
# Data root: $KOLO_DATA, default ./kolo_data in the repository. Run name: $KOLO_DEMO_RUN, default "demo".
# Training config: $KOLO_DEMO_CONFIG, default the bundled demo.yaml. Venv: $KOLO_VENV, default ./.venv.
#
# Running it again retrains the demo run from scratch (kolo train --overwrite): the demo always shows the full
# pipeline, and the export that follows sees new inputs so it really converts again (its stages are skipped only
# when their inputs did not change). Nothing outside the demo run is touched.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${KOLO_VENV:-$ROOT/.venv}
export KOLO_DATA=${KOLO_DATA:-$ROOT/kolo_data}
export KOLO_RUNTIME=local
RUN=${KOLO_DEMO_RUN:-demo}
PROMPT=${KOLO_DEMO_PROMPT:-What is kolo?}

t0=$(date +%s)
t_step=$t0
# Each step line says how long the previous step took, so a slow run shows where the time went.
say() {
  local now; now=$(date +%s)
  [ "$now" != "$t0" ] && printf '\033[2m(%ss)\033[0m\n' "$((now - t_step))"
  t_step=$now
  printf '\n\033[1;34m[kolo demo]\033[0m %s\n' "$*"
}

say "1/6 install (CPU)"
bash "$ROOT/scripts/install.sh"
KOLO="$VENV/bin/kolo"
PY="$VENV/bin/python"

say "2/6 tiny demo model -> $KOLO_DATA/models/tiny (a toy: it only proves the pipeline)"
"$PY" -m kolo_trainer make-tiny-model --data-root "$KOLO_DATA" --name tiny

say "3/6 example dataset -> $KOLO_DATA/data/example.jsonl"
EXAMPLE=$("$PY" -c 'from kolo_trainer import tiny; print(tiny.example_dataset_path())')
mkdir -p "$KOLO_DATA/data"
if ! cmp -s "$EXAMPLE" "$KOLO_DATA/data/example.jsonl"; then
  "$KOLO" data add "$EXAMPLE" --as example.jsonl --force
fi

say "4/6 kolo train (demo config; --overwrite: a re-run retrains the demo run)"
CONFIG=${KOLO_DEMO_CONFIG:-$("$PY" -c 'from importlib import resources; print(resources.files("kolo_trainer") / "assets" / "demo.yaml")')}
"$KOLO" train --config "$CONFIG" --output-dir "$RUN" --overwrite

say "5/6 kolo export: F16 + Q4_K_M, Modelfiles, verification"
"$KOLO" export "$RUN" --quantization Q4_K_M

say "6/6 kolo chat --prompt \"$PROMPT\""
"$KOLO" chat "$RUN" --quantization Q4_K_M --temperature 0 --prompt "$PROMPT"

t1=$(date +%s)
say "done in $((t1 - t0)) s. The GGUFs and Modelfiles are in $KOLO_DATA/outputs/$RUN/gguf/"
echo "  chat again:        $KOLO chat $RUN"
echo "  install in Ollama: cd $KOLO_DATA/outputs/$RUN/gguf && ollama create $RUN -f Modelfile.Q4_K_M"
