"""``kolo eval``: how much quality each GGUF of a run keeps, measured on the run's own held-out data.

For the HF model (the merged model, the full fine-tune, or base + adapter: what the run has) and for the F16 and
every quantised GGUF on disk, on the same token ids (kolo's assistant-only masking, :mod:`kolo_trainer.masking`):
loss and perplexity on the assistant tokens, and, against the HF model at the same positions, the next-token KL
divergence and the top-1 agreement. Plus a few greedy answers side by side. Writes ``eval.json`` and ``eval.png``
in the run folder (atomically) and recommends the smallest GGUF within the stated quality budget.

options.py  EvalOptions (the one definition of the verb's options)
data.py     which conversations: --eval-data, the run's eval file, its --eval-split rows (found again with the
            trainer's own rule, ``train.main.held_out``), else the training rows (said so)
metrics.py  log-softmax statistics over positions (numpy only)
models.py   the HF reference and the GGUFs (llama.cpp, logits_all) on the same ids; greedy answers
main.py     ``python -m kolo_trainer eval``: check, measure, recommend, write eval.json + eval.png
"""
