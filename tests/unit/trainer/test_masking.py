"""Assistant-only labels, checked token by token with a real SentencePiece tokenizer (built here, ~1 s).

The tokenizer is kolo's tiny-model tokenizer (``tiny.build_tokenizer``): every registry special token is one token,
byte fallback, loaded through ``AutoTokenizer`` like any model's.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

from kolo_trainer import masking, templates as T  # noqa: E402
from kolo_trainer.errors import DataError  # noqa: E402

# What a reply must end with, per template: written here, independently of the registry entries. EOS means the
# tokenizer's eos_token (the template writes the variable).
END_OF_TURN = {"llama-3.1": "<|eot_id|>", "llama-3.2": "<|eot_id|>", "qwen-2.5": "<|im_end|>", "qwen-3": "<|im_end|>",
               "gemma-2": "<end_of_turn>", "gemma-3": "<end_of_turn>", "phi-3.5": "<|end|>", "phi-4": "<|im_end|>",
               "mistral-v0.3": "EOS", "mistral-nemo": "EOS", "deepseek-r1-distill-llama": "<｜end▁of▁sentence｜>",
               "deepseek-r1-distill-qwen": "<｜end▁of▁sentence｜>", "smollm3": "<|im_end|>",
               "granite-3.3": "<|end_of_text|>", "chatml": "<|im_end|>", "alpaca": "</s>"}


def expected_replies(tok, name: str, conv: list[dict]) -> list[str]:
    """The trained text of each reply under the vendor's template, as its documentation describes it."""
    end = tok.eos_token if END_OF_TURN[name] == "EOS" else END_OF_TURN[name]
    lead = " " if name == "mistral-v0.3" else ""  # v3: "[/INST] reply</s>"
    replies = [lead + m["content"] + end for m in conv if m["role"] == "assistant"]
    if name == "qwen-3":  # the reply after the last question carries an (empty) think block
        replies[-1] = "<think>\n\n</think>\n\n" + replies[-1]
    if name == "phi-3.5":  # a finished conversation ends with eos after the last <|end|>
        replies[-1] += "\n" + tok.eos_token
    return replies

SYSTEM = "You are Kolo. Answer in one line."
CONVERSATION = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is kolo?"},
    {"role": "assistant", "content": "A fine-tuning tool (ASSISTANT-ONE)."},
    {"role": "user", "content": 'Quote "this"\nand this: naïve 🙂'},
    {"role": "assistant", "content": 'Sure: "this"\nnaïve 🙂 done ASSISTANT-TWO'},
    {"role": "user", "content": "Last question?"},
    {"role": "assistant", "content": "Last answer ASSISTANT-THREE."},
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    from kolo_trainer import tiny

    out = tmp_path_factory.mktemp("tok")
    tiny.build_tokenizer(out, template="chatml", extra_texts=[m["content"] for m in CONVERSATION])
    return AutoTokenizer.from_pretrained(str(out))


def runs(enc):
    """Maximal runs of consecutive trained positions."""
    out, cur = [], []
    for i, label in enumerate(enc.labels):
        if label != masking.IGNORE:
            cur.append(i)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def check_trained_exactly(tok, enc, expected: list[str], prompts=("What is kolo", "Answer in one line")):
    # Labels are the ids themselves where trained.
    assert all(lab in (masking.IGNORE, i) for lab, i in zip(enc.labels, enc.input_ids))
    rs = runs(enc)
    assert len(rs) == len(expected)
    # The tokenizer's own offsets for the whole text: recomputed here, not taken from the encoder.
    offs = tok(enc.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    shift = len(enc.input_ids) - len(offs)  # a prepended BOS has no offset
    assert shift in (0, 1)
    for r, want in zip(rs, expected):
        a, b = offs[r[0] - shift][0], offs[r[-1] - shift][1]
        assert enc.text[a:b] == want
        # decode() agrees up to whitespace (SentencePiece drops a leading space of the first piece and, legacy mode,
        # writes one after a special token that follows a newline).
        decoded = tok.decode([enc.input_ids[i] for i in r], skip_special_tokens=False)
        assert decoded.split() == want.replace("\u2581", " ").split()  # (SentencePiece decodes ▁ as a space)
    assert enc.n_trained == sum(len(r) for r in rs)
    # Nothing of the prompts is trained; everything of the replies is.
    untrained = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab == masking.IGNORE],
                           skip_special_tokens=False)
    assert "ASSISTANT-" not in untrained and all(p in untrained for p in prompts)


@pytest.mark.parametrize("name", T.names())
def test_every_registry_template_trains_exactly_the_replies(tok, name):
    """Every assistant turn of a three-exchange row is found, under every real template (Qwen 3 and Phi-3.5
    render past turns differently from the last one: the reply is still located in the full text)."""
    conv = CONVERSATION[1:] if name == "gemma-2" else CONVERSATION  # Gemma 2 refuses system messages
    enc = masking.encode(tok, conv, T.get(name).jinja)
    # Gemma 2 has no system prompt; Mistral's v3 templates write it only into a LAST user turn, so a finished
    # training row never shows it (the vendor's rule, reproduced).
    no_system = name in ("gemma-2", "mistral-v0.3", "mistral-nemo")
    check_trained_exactly(tok, enc, expected_replies(tok, name, conv),
                          prompts=("What is kolo",) if no_system else ("What is kolo", "Answer in one line"))
    # The ids are exactly the tokenisation of the whole rendered conversation, with one BOS.
    plain = tok(enc.text, add_special_tokens=False)["input_ids"]
    assert enc.input_ids in (plain, [tok.bos_token_id] + plain)
    assert enc.input_ids.count(tok.bos_token_id) == 1 and enc.input_ids[0] == tok.bos_token_id
    assert enc.labels[0] == masking.IGNORE and not enc.truncated


@pytest.mark.parametrize("name", T.names())
def test_without_system_prompt_and_single_turn(tok, name):
    conv = CONVERSATION[1:3]
    enc = masking.encode(tok, conv, T.get(name).jinja)
    check_trained_exactly(tok, enc, expected_replies(tok, name, conv), prompts=("What is kolo",))


def test_gemma_2_refuses_a_system_message_with_a_data_error(tok):
    with pytest.raises(DataError, match="System role not supported"):
        masking.encode(tok, CONVERSATION, T.get("gemma-2").jinja)


def test_trailing_whitespace_after_the_marker_is_not_trained(tok):
    enc = masking.encode(tok, CONVERSATION[:3], T.get("alpaca").jinja)
    assert enc.text.endswith("</s>\n\n")
    last_trained = max(i for i, lab in enumerate(enc.labels) if lab != masking.IGNORE)
    assert tok.convert_ids_to_tokens(enc.input_ids[last_trained]) == "</s>"
    assert all(lab == masking.IGNORE for lab in enc.labels[last_trained + 1:]) and last_trained < len(enc.labels) - 1


# --- model templates that are not in the registry --------------------------------------------------------------

MISTRAL_V3_LIKE = (  # the system prompt goes into the LAST user turn: earlier turns re-render differently
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% set ns = namespace(last_user=0) %}{% for m in loop_messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in loop_messages %}{% if m['role'] == 'user' %}{% if loop.index0 == ns.last_user and system is defined %}"
    "{{ '[INST] ' + system + '\\n\\n' + m['content'] + '[/INST]' }}{% else %}{{ '[INST] ' + m['content'] + '[/INST]' }}"
    "{% endif %}{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)

NO_GENERATION_PROMPT = (  # ignores add_generation_prompt: the model must write the header itself
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'Bot: ' + m['content'] + '<|end|>\\n' }}"
    "{% else %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
)

TRIMMING_LLAMA = T.get("llama-3.1").jinja  # Meta's template trims every content


def test_model_template_that_rerenders_earlier_turns(tok):
    enc = masking.encode(tok, CONVERSATION, MISTRAL_V3_LIKE)
    # The template's own tokens: " " + content + eos (the eos of this tokenizer is <|im_end|>).
    want = [" " + m["content"] + tok.eos_token for m in CONVERSATION if m["role"] == "assistant"]
    check_trained_exactly(tok, enc, want)
    assert SYSTEM in enc.text.split("[INST]")[-1]  # really re-rendered: the system prompt moved to the last turn


def test_model_template_without_generation_prompt_trains_its_header(tok):
    enc = masking.encode(tok, CONVERSATION, NO_GENERATION_PROMPT)
    check_trained_exactly(tok, enc, ["Bot: " + m["content"] + "<|end|>" for m in CONVERSATION
                                     if m["role"] == "assistant"])


def test_trimming_template_with_padded_content(tok):
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  padded ASSISTANT-X  "}]
    enc = masking.encode(tok, conv, TRIMMING_LLAMA)
    check_train = [t for t in runs(enc)]
    assert len(check_train) == 1
    assert tok.decode([enc.input_ids[i] for i in check_train[0]], skip_special_tokens=False).strip() == \
        "padded ASSISTANT-X<|eot_id|>"


def test_template_that_drops_the_reply_is_an_error(tok):
    rewrite = "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] | upper }}{% endif %}" \
              "{% endfor %}{% if messages|length > 2 %}x{% endif %}"
    conv = CONVERSATION[1:5]
    with pytest.raises(DataError, match="cannot locate assistant message"):
        masking.encode(tok, conv, rewrite)


def test_train_on_inputs_and_truncation(tok):
    jinja = T.get("chatml").jinja
    full = masking.encode(tok, CONVERSATION, jinja, train_on_inputs=True)
    # Everything but the prepended BOS (which nothing predicts) is trained.
    assert full.input_ids[0] == tok.bos_token_id and full.labels[0] == masking.IGNORE
    assert full.labels[1:] == full.input_ids[1:] and full.n_trained == len(full.input_ids) - 1
    short = masking.encode(tok, CONVERSATION, jinja, max_length=20)
    ref = masking.encode(tok, CONVERSATION, jinja)
    assert short.truncated and short.input_ids == ref.input_ids[:20] and short.labels == ref.labels[:20]
    assert short.n_trained == sum(1 for x in ref.labels[:20] if x != masking.IGNORE)


def test_text_rows_train_everything_with_bos_and_eos(tok):
    enc = masking.encode(tok, [{"role": "text", "content": "Plain document text."}], T.get("chatml").jinja)
    assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids[-1] == tok.eos_token_id
    assert enc.labels[0] == masking.IGNORE and enc.labels[1:] == enc.input_ids[1:]
    assert tok.decode(enc.input_ids[1:-1]) == "Plain document text."


def test_template_error_is_a_data_error(tok):
    with pytest.raises(DataError, match="cannot render this conversation: .*no system"):
        masking.encode(tok, CONVERSATION, "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system') }}"
                                          "{% endif %}")


# --- preview verb ----------------------------------------------------------------------------------------------

def test_preview_marks_the_trained_tokens(tok, tmp_path, capsys):
    """Through the trainer's real entry point (in-process: a subprocess would re-import transformers each time)."""
    from kolo_trainer.cli import main

    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    tok.save_pretrained(str(root / "models" / "tok"))
    (root / "data" / "chats.jsonl").write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    argv = ["preview", "data/chats.jsonl", "--base-model", "models/tok", "--data-root", str(root),
            "--style", "brackets"]
    assert main(argv + ["--chat-template", "gemma"]) == 0
    out = capsys.readouterr().out
    assert "[[A fine-tuning tool (ASSISTANT-ONE).<end_of_turn>]]\n<start_of_turn>user" in out
    assert "data/chats.jsonl:1 rendered with chat template 'gemma-3'" in out and " trained" in out
    # By default the model's own template (chatml, saved with the tokenizer), proven equal to the registry's.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "'auto' (= registry chatml)" in out and "[[Last answer ASSISTANT-THREE.<|im_end|>]]" in out
    assert main(argv[:3] + ["models/missing"] + argv[4:]) == 2
    err = capsys.readouterr().err
    assert "--base-model 'models/missing': no such model folder under the data root" in err
    assert "Traceback" not in err
    (root / "models" / "broken").mkdir()
    assert main(argv[:3] + ["models/broken"] + argv[4:]) == 2
    assert "--base-model 'models/broken': cannot load its tokenizer" in capsys.readouterr().err
    assert main(argv + ["--row", "5"]) == 2 and "--row: must be between 1 and 1" in capsys.readouterr().err
