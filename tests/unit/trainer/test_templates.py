"""The chat-template registry: entries, rendering (== transformers' own), registry matching, resolve()."""

from __future__ import annotations

import pytest

from kolo_trainer import templates as T
from kolo_trainer.errors import OptionsError

EXPECTED = {"llama-3", "chatml", "mistral", "gemma", "phi-3", "alpaca"}


def test_registry_has_every_family_with_what_export_needs():
    assert set(T.names()) == EXPECTED
    for name in T.names():
        e = T.get(name)
        assert e.name == name and e.jinja and e.ollama and e.stop and e.bos
        assert e.end_of_turn == e.stop[0]
        # Every special token is also in the union tiny.py adds to the vocabulary.
        assert set(e.special_tokens) <= set(T.ALL_SPECIAL_TOKENS)
        # The end-of-turn string is something every rendered reply ends with.
        text = T.render(e.jinja, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
        assert ("a" + e.end_of_turn) in text, name
    assert len(T.ALL_SPECIAL_TOKENS) == len(set(T.ALL_SPECIAL_TOKENS))
    assert "<|im_start|>" in T.ALL_SPECIAL_TOKENS and "<|eot_id|>" in T.ALL_SPECIAL_TOKENS


def test_get_is_case_insensitive_and_refuses_unknown_names():
    assert T.get("ChatML").name == "chatml" and T.get("llama3").name == "llama-3"
    with pytest.raises(KeyError, match="unknown chat template 'vicuna'; choose from"):
        T.get("vicuna")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_render_equals_transformers_render(name):
    """Our light renderer must be transformers' (same sandbox, trim_blocks/lstrip_blocks, globals)."""
    tcu = pytest.importorskip("transformers.utils.chat_template_utils")
    jinja = T.get(name).jinja
    for conv in T.BATTERY:
        for agp in (True, False):
            ours = T.render(jinja, list(conv), add_generation_prompt=agp, bos_token="<s>")
            theirs = tcu.render_jinja_template([list(conv)], chat_template=jinja, add_generation_prompt=agp,
                                               bos_token="<s>")[0][0]
            assert ours == theirs


def test_render_understands_model_template_features():
    # {% generation %} markers, raise_exception, tojson and loop controls, as in real model templates.
    jinja = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
             "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | tojson }}{% endgeneration %}"
             "{% else %}{{ m['content'] }}{% endif %}{% if loop.index > 5 %}{% break %}{% endif %}{% endfor %}")
    assert T.render(jinja, [{"role": "user", "content": "ü"}, {"role": "assistant", "content": 'a"b'}]) == 'ü"a\\"b"'
    with pytest.raises(T.TemplateError, match="no tools"):
        T.render(jinja, [{"role": "tool", "content": "x"}])
    with pytest.raises(T.TemplateError, match="syntax error"):
        T.render("{% for %}", [])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_entry_matches_itself_and_only_itself(name):
    e = T.get(name)
    assert T.match_registry(e.jinja) is e
    # A template hard-coding BOS is the same template (the tokenizer adds BOS; see the BOS rule).
    literal = e.jinja.replace("{{- bos_token -}}", "{{- '<s>' -}}")
    assert T.match_registry(literal, bos_token="<s>") is e


def test_lookalike_templates_are_not_proven():
    llama = T.get("llama-3").jinja
    # Meta's original trims contents: differs on "  padded  " content, so Ollama (no trim) would not match.
    trimmed = llama.replace("message['content'] + '<|eot_id|>'", "message['content'] | trim + '<|eot_id|>'")
    assert trimmed != llama and T.match_registry(trimmed) is None
    # Qwen 2.5 adds a default system prompt when there is none.
    qwen = ("{%- if messages[0]['role'] != 'system' -%}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' -}}"
            "{%- endif -%}" + T.get("chatml").jinja)
    assert T.match_registry(qwen) is None
    # Gemma 2 refuses a system role: it cannot be proven on the battery at all.
    refusing = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}" \
               "{% endif %}" + T.get("gemma").jinja
    assert T.match_registry(refusing) is None


def test_resolve_registry_name():
    r = T.resolve("chatml", None, "/nonexistent")
    assert (r.name, r.proven, r.source, r.ollama, r.stop) == ("chatml", True, "registry", T.get("chatml").ollama,
                                                             list(T.get("chatml").stop))


def test_resolve_auto_uses_the_model_template_and_proves_it(capsys):
    own = T.get("phi-3").jinja.replace("{{- bos_token -}}", "{{ bos_token }}")  # spelled differently, same output
    r = T.resolve("auto", own, "/nonexistent")
    assert r.jinja == own and r.registry_match == "phi-3" and r.proven and r.ollama == T.get("phi-3").ollama
    assert r.warning is None and capsys.readouterr().out == ""


def test_resolve_auto_unproven_says_so_loudly(capsys):
    own = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}" \
          "assistant:{% endif %}"
    r = T.resolve("auto", own, "/nonexistent", eos_token="</s>")
    assert r.ollama is None and not r.proven and r.stop == ["</s>"] and r.jinja == own
    out = capsys.readouterr().out
    assert out.startswith("@@kolo ") and "no equivalent Ollama TEMPLATE could be proven" in out


def test_resolve_auto_without_model_template():
    with pytest.raises(OptionsError, match="has no chat template of its own"):
        T.resolve("auto", None, "/nonexistent")


def test_resolve_jinja_file_relative_to_data_root(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "mine.jinja").write_text(T.get("gemma").jinja)
    r = T.resolve("templates/mine.jinja", None, tmp_path, emit_warning=False)
    assert r.source == "file" and r.registry_match == "gemma" and r.proven
    with pytest.raises(OptionsError, match="file not found"):
        T.resolve("templates/missing.jinja", None, tmp_path)
    with pytest.raises(OptionsError, match=r"\.\."):
        T.resolve("../escape.jinja", None, tmp_path)
    (tmp_path / "templates" / "broken.jinja").write_text("{% for m in messages %}")
    with pytest.raises(OptionsError, match="syntax error"):
        T.resolve("templates/broken.jinja", None, tmp_path)


def test_resolve_unknown_name_lists_choices():
    with pytest.raises(OptionsError, match="choose from llama-3, chatml, mistral, gemma, phi-3, alpaca"):
        T.resolve("vicuna", None, "/x")


def test_manifest_section():
    m = T.resolve("alpaca", None, "/x").manifest(system="S")
    assert m["name"] == "alpaca" and m["ollama_template"] and m["stop"][0] == "</s>" and m["system"] == "S"


def test_templates_module_is_light():
    import subprocess
    import sys

    code = ("import sys, kolo_trainer.templates; "
            "print(sorted(m for m in ('jinja2', 'transformers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_gorender_without_go_is_a_clear_error(monkeypatch):
    from kolo_trainer.templates import gorender

    monkeypatch.setattr(gorender, "_go", lambda: None)
    assert not gorender.available()
    with pytest.raises(gorender.GoUnavailable, match="Go is not installed") as exc:
        gorender.render("{{ range .Messages }}{{ end }}", [])
    assert "golang-go" in (exc.value.hint or "")
