"""Export: merged 16-bit model -> F16 GGUF -> quantised GGUFs -> Ollama Modelfiles -> verification; and chat.

Stages (``main.py`` defines one function per stage; ``stages.run`` runs each: events, skip when its recorded input
fingerprint and outputs still match, atomic outputs, a manifest record as soon as it finishes):

* ``merge.py``      LoRA merged into the base in 16-bit (``<run>/merged/``); method full uses ``<run>/model``.
* ``convert.py``    the llama.cpp converter (``converter.py`` extracts it from the llama-cpp-python sdist) as a
                    subprocess -> ``gguf/<run>-F16.gguf`` (and BF16 on request); ``--adapter-only`` converts the
                    LoRA to a GGUF adapter instead.
* ``quantize.py``   ``llama_cpp.llama_model_quantize`` from the 16-bit GGUF; the report stage records each GGUF's
                    tensor types and the tensors that fell back.
* ``modelfile.py``  one Modelfile per GGUF (TEMPLATE, stop, num_ctx, SYSTEM, sampling), Modelfile-safe quoting.
* ``verify.py``     load + generate, token parity, greedy parity, Go-template parity.

Heavy libraries (torch, transformers, peft, llama_cpp) are imported inside functions only.
"""
