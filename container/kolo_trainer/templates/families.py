"""The vendor families of the registry: where each real chat template comes from, and its tokens and stops.

Each family's Jinja is the vendor's template byte for byte (``<name>.jinja`` next to this file) and its Go twin is
``<name>.gotmpl``; this module holds the rest: the source, the tokens, the stop strings, the date the template
prints, and what the Go twin cannot reproduce (``residual``). Data only, no logic.

Stops are the union of (a) every end-of-sequence / end-of-turn string of the vendor's tokenizer_config.json and
generation_config.json ``eos_token_id`` list, (b) the stops of Ollama's own template for that format
(github:ollama/ollama template/<name>.json) where it has one, so a Modelfile stop list never drops a stop Ollama
would have used, and (c) the turn headers, so a model that starts a new turn stops instead of talking to itself.
The first entry is THE end-of-turn string of an assistant reply (masking trains on it; tiny.py makes it eos).
"""

from __future__ import annotations

SDIST = "llama-cpp-python 0.3.36 sdist, vendor/llama.cpp/models/templates/"

_TRIM = ("message contents with leading/trailing whitespace: the template trims them, Ollama passes them through "
         "untouched (kolo strips the messages of trimming templates in training, so ordinary input is equal)")
_THINK_SPLIT = ("assistant contents of past turns that contain '</think>': the template keeps only the text after "
                "it, a Go template cannot split strings (contents without '</think>' are equal)")
_NO_TOOLS = "tool definitions, tool calls and tool results: kolo trains and proves plain conversations only"
_DATE = ("the date in the system preamble: training pinned it (kolo.json chat_template.date) and the TEMPLATE "
         "writes that same date, so the model keeps seeing its training date, not today's")

_LLAMA_STOPS = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>")
_LLAMA_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")
_QWEN_STOPS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
_GEMMA_STOPS = ("<end_of_turn>", "<eos>", "<start_of_turn>")
_R1_TOKENS = ("<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>")
_MISTRAL_STOPS = ("</s>", "[INST]", "[/INST]")

#: name -> facts. ``bos_token``/``eos_token``: the vendor tokenizer's (the template renders them); ``date_format``:
#: the strftime format of a date the template renders from ``strftime_now`` (pinned at training time).
FAMILIES: dict[str, dict] = {
    "llama-3.1": dict(
        source=SDIST + "meta-llama-Llama-3.1-8B-Instruct.jinja (byte-identical to "
                       "meta-llama-Llama-3.3-70B-Instruct.jinja: Llama 3.3 uses this entry)",
        bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", stop=_LLAMA_STOPS, special_tokens=_LLAMA_TOKENS,
        date_format=None, residual=(_TRIM, _NO_TOOLS),
        description="Llama 3.1 / 3.3 Instruct: system preamble 'Cutting Knowledge Date: December 2023 / Today "
                    "Date: 26 Jul 2024' (a fixed date), contents trimmed."),
    "llama-3.2": dict(
        source=SDIST + "meta-llama-Llama-3.2-3B-Instruct.jinja",
        bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", stop=_LLAMA_STOPS, special_tokens=_LLAMA_TOKENS,
        date_format="%d %b %Y", residual=(_TRIM, _DATE, _NO_TOOLS),
        description="Llama 3.2 Instruct: like 3.1, but 'Today Date' is the day the template is rendered."),
    "qwen-2.5": dict(
        source=SDIST + "Qwen-Qwen2.5-7B-Instruct.jinja",
        bos_token="", eos_token="<|im_end|>", stop=_QWEN_STOPS, special_tokens=("<|im_start|>", "<|im_end|>"),
        date_format=None, residual=(_NO_TOOLS,),
        description="Qwen 2.5 Instruct: ChatML with Qwen's default system prompt."),
    "qwen-3": dict(
        source=SDIST + "Qwen-Qwen3-0.6B.jinja",
        bos_token="", eos_token="<|im_end|>", stop=_QWEN_STOPS, special_tokens=("<|im_start|>", "<|im_end|>"),
        date_format=None, residual=(_THINK_SPLIT, _NO_TOOLS,
                                    "user messages wrapped in <tool_response>...</tool_response> (the template "
                                    "does not count them as queries)"),
        description="Qwen 3: ChatML; the reply after the last user message carries a <think> block. The TEMPLATE "
                    "uses .Thinking, so Ollama infers the thinking capability and renders with think on; "
                    "think=false gives the template's enable_thinking=false prompt."),
    "gemma-2": dict(
        source=SDIST + "google-gemma-2-2b-it.jinja",
        bos_token="<bos>", eos_token="<eos>", stop=_GEMMA_STOPS, special_tokens=("<start_of_turn>", "<end_of_turn>"),
        date_format=None, residual=(_TRIM, "system messages: the template refuses them (training data with one "
                                           "fails with exit 3); the TEMPLATE ignores an Ollama system prompt"),
        description="Gemma 2 it: <start_of_turn>user/model, no system role, contents trimmed."),
    "gemma-3": dict(
        source="github:ollama/ollama template/index.json entry 'gemma3-instruct' (Ollama's copy of the "
               "chat_template of google/gemma-3-*-it tokenizer_config.json)",
        bos_token="<bos>", eos_token="<eos>", stop=_GEMMA_STOPS, special_tokens=("<start_of_turn>", "<end_of_turn>"),
        date_format=None, residual=(_TRIM, "image contents (kolo trains text only)"),
        description="Gemma 3 it: the system prompt prefixes the first user turn, contents trimmed."),
    "phi-3.5": dict(
        source=SDIST + "microsoft-Phi-3.5-mini-instruct.jinja",
        bos_token="<s>", eos_token="<|endoftext|>", stop=("<|end|>", "<|endoftext|>", "<|assistant|>", "<|user|>",
                                                          "<|system|>"),
        special_tokens=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
        date_format=None, residual=("an empty system message: the template drops it (so does the TEMPLATE)",),
        description="Phi-3.5 mini instruct: <|user|> ... <|end|>; a finished conversation ends with eos."),
    "phi-4": dict(
        source="llama.cpp tests/test-chat-template.cpp entry 'phi-4' (in the same sdist; the chat_template of "
               "microsoft/phi-4 tokenizer_config.json)",
        bos_token="<|endoftext|>", eos_token="<|im_end|>", stop=("<|im_end|>", "<|endoftext|>", "<|im_start|>",
                                                                 "<|im_sep|>"),
        special_tokens=("<|im_start|>", "<|im_sep|>", "<|im_end|>"), date_format=None, residual=(),
        description="Phi-4: <|im_start|>role<|im_sep|>; every user turn opens the assistant turn."),
    "mistral-v0.3": dict(
        source="llama.cpp tests/test-chat-template.cpp entry 'Mistral-Large-Instruct-2407 (mistralai v3 "
               "template)': Mistral's v3 template as shipped in mistralai/Mistral-7B-Instruct-v0.3 "
               "tokenizer_config.json (not re-checked against the Hub here: no network)",
        bos_token="<s>", eos_token="</s>", stop=_MISTRAL_STOPS, special_tokens=("[INST]", "[/INST]"),
        date_format=None, residual=(_TRIM, _NO_TOOLS),
        description="Mistral 7B Instruct v0.3 (v3 tokenizer): '[INST] ...[/INST] reply</s>'; the system prompt "
                    "goes into the LAST user message only."),
    "mistral-nemo": dict(
        source=SDIST + "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        bos_token="<s>", eos_token="</s>", stop=_MISTRAL_STOPS, special_tokens=("[INST]", "[/INST]"),
        date_format=None, residual=(_NO_TOOLS,),
        description="Mistral Nemo (v3 tekken): '[INST]...[/INST]reply</s>', system prompt in the last user turn."),
    "deepseek-r1-distill-llama": dict(
        source=SDIST + "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
        bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>",
        stop=("<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"), special_tokens=_R1_TOKENS,
        date_format=None, residual=(_THINK_SPLIT.replace("of past turns ", "of every turn "), _NO_TOOLS,
                                    "Ollama's thinking capability: the TEMPLATE does not use .Thinking, so "
                                    "Ollama returns the reasoning inside the reply"),
        description="DeepSeek-R1 distills (Llama and, with the Hub's template, Qwen): <｜User｜>/<｜Assistant｜>, "
                    "the prompt opens a <think> block."),
    "deepseek-r1-distill-qwen": dict(
        source=SDIST + "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja (llama.cpp's copy, which closes the "
                       "<think> block unless enable_thinking is passed; the Hub's original renders like "
                       "deepseek-r1-distill-llama)",
        bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>",
        stop=("<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"), special_tokens=_R1_TOKENS,
        date_format=None, residual=(_THINK_SPLIT.replace("of past turns ", "of every turn "), _NO_TOOLS,
                                    "enable_thinking=true (kolo renders without it, as transformers does)"),
        description="DeepSeek-R1-Distill-Qwen as vendored by llama.cpp: the prompt ends '<think>\\n</think>'."),
    "smollm3": dict(
        source=SDIST + "HuggingFaceTB-SmolLM3-3B.jinja",
        bos_token="", eos_token="<|im_end|>", stop=("<|im_end|>", "<|im_start|>"),
        special_tokens=("<|im_start|>", "<|im_end|>"), date_format=None,
        residual=("system prompts containing '/think' or '/no_think': the template switches the reasoning mode "
                  "and removes the flag, a Go template cannot search or replace text", _NO_TOOLS),
        description="SmolLM3: ChatML with a metadata system block (reasoning mode /think)."),
    "granite-3.3": dict(
        source=SDIST + "ibm-granite-granite-3.3-2B-Instruct.jinja",
        bos_token="<|end_of_text|>", eos_token="<|end_of_text|>",
        stop=("<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>"),
        special_tokens=("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"), date_format="%B %d, %Y",
        residual=(_DATE, _NO_TOOLS, "documents, controls and thinking=True (kolo renders without them)",
                  "a conversation of only a system message (the template writes no generation prompt)"),
        description="Granite 3.3 instruct: <|start_of_role|>role<|end_of_role|>; a dated default system prompt."),
}

#: Vendor names (what users type) -> the entry holding that vendor's real template.
ALIASES = {
    "llama-3": "llama-3.1", "llama3": "llama-3.1", "llama-3.3": "llama-3.1", "llama3.1": "llama-3.1",
    "llama3.2": "llama-3.2", "llama3.3": "llama-3.1",
    "qwen": "qwen-2.5", "qwen2": "qwen-2.5", "qwen2.5": "qwen-2.5", "qwen3": "qwen-3",
    "gemma": "gemma-3", "gemma2": "gemma-2", "gemma3": "gemma-3",
    "phi-3": "phi-3.5", "phi3": "phi-3.5", "phi3.5": "phi-3.5", "phi4": "phi-4",
    "mistral": "mistral-v0.3", "mistral-nemo-instruct": "mistral-nemo", "nemo": "mistral-nemo",
    "deepseek-r1": "deepseek-r1-distill-llama", "granite": "granite-3.3",
}
