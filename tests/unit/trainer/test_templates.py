"""The chat-template registry: entries, rendering (== transformers' own), registry matching, resolve()."""

from __future__ import annotations

import pytest

from kolo_trainer import templates as T
from kolo_trainer.errors import OptionsError

VENDORS = {"llama-3.1", "llama-3.2", "qwen-2.5", "qwen-3", "gemma-2", "gemma-3", "phi-3.5", "phi-4", "mistral-v0.3",
           "mistral-nemo", "deepseek-r1-distill-llama", "deepseek-r1-distill-qwen", "smollm3", "granite-3.3"}
EXPECTED = VENDORS | {"chatml", "alpaca"}
DATE = "2026-11-30"


def test_registry_has_every_family_with_what_export_needs():
    assert set(T.names()) == EXPECTED
    for name in T.names():
        e = T.get(name)
        assert e.name == name and e.jinja and e.ollama and e.stop and e.bos and e.source
        assert e.end_of_turn == e.stop[0]
        # The end-of-turn string is something every rendered reply ends with.
        text = T.render(e.jinja, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                        eos_token=e.eos_token)
        assert ("a" + e.end_of_turn) in text, name
        # The vendor's EOS is a stop (a Modelfile stop list replaces Ollama's: it must never lose one).
        assert e.eos_token is None or e.eos_token in e.stop, name
        assert T.DATE_MARK not in e.ollama_for(DATE)
    assert len(T.ALL_SPECIAL_TOKENS) == len(set(T.ALL_SPECIAL_TOKENS))
    assert "<|im_start|>" in T.ALL_SPECIAL_TOKENS and "<|eot_id|>" in T.ALL_SPECIAL_TOKENS


def test_vendor_names_mean_the_vendors_real_template():
    assert T.get("ChatML").name == "chatml"
    assert {T.get(n).name for n in ("llama-3", "llama3", "llama-3.3")} == {"llama-3.1"}
    assert (T.get("mistral").name, T.get("gemma").name, T.get("phi-3").name, T.get("qwen").name) == \
        ("mistral-v0.3", "gemma-3", "phi-3.5", "qwen-2.5")
    # The vendor entries are the real templates: Llama 3.x has its dated system preamble, Qwen its default system.
    assert "Cutting Knowledge Date" in T.render(T.get("llama-3").jinja, [{"role": "user", "content": "q"}])
    assert "You are Qwen" in T.render(T.get("qwen").jinja, [{"role": "user", "content": "q"}])
    with pytest.raises(KeyError, match="unknown chat template 'vicuna'; choose from"):
        T.get("vicuna")


def test_pinned_date_is_what_the_template_prints_and_what_the_go_twin_writes():
    e = T.get("llama-3.2")
    text = T.render(e.jinja, [{"role": "user", "content": "q"}], date="2024-02-29")
    assert "Today Date: 29 Feb 2024" in text
    assert "Today Date: 29 Feb 2024" in e.ollama_for("2024-02-29")
    g = T.get("granite-3.3")
    assert "Today's Date: February 29, 2024." in T.render(g.jinja, [{"role": "user", "content": "q"}],
                                                           date="2024-02-29")
    assert "Today's Date: February 29, 2024." in g.ollama_for("2024-02-29")
    r = T.resolve("llama-3.2", None, "/x", date="2025-01-02")
    assert r.date == "2025-01-02" and "Today Date: 02 Jan 2025" in r.ollama
    assert r.manifest()["date"] == "2025-01-02"
    # resolve pins the process: renders without an explicit date print the run's day, not today's.
    assert "Today Date: 02 Jan 2025" in T.render(e.jinja, [{"role": "user", "content": "q"}])
    T.pin_date(None)
    with pytest.raises(ValueError):
        T.pin_date("30/11/2026")


def test_trimming_rule_strips_contents_only_for_templates_that_trim():
    msgs = [{"role": "user", "content": "  q \n"}]
    assert T.trims(T.get("llama-3.1").jinja) and not T.trims(T.get("chatml").jinja)
    assert T.prepare_messages(T.get("gemma-3").jinja, msgs)[0]["content"] == "q"
    assert T.prepare_messages(T.get("chatml").jinja, msgs)[0]["content"] == "  q \n"
    assert msgs[0]["content"] == "  q \n"  # never modified in place
    r = T.resolve("gemma", None, "/x")
    assert r.manifest()["trim"] and any("whitespace" in x for x in r.residual)


def test_stops_are_the_family_stops_plus_the_tokenizer_eos():
    r = T.resolve("llama-3.2", None, "/x", eos_token="<|eot_id|>")
    assert r.stop[0] == "<|eot_id|>" and {"<|eom_id|>", "<|end_of_text|>", "<|start_header_id|>"} <= set(r.stop)
    r = T.resolve("gemma-3", None, "/x", eos_token="<my_eos>")
    assert r.stop[0] == "<end_of_turn>" and "<eos>" in r.stop and "<my_eos>" in r.stop
    assert len(r.stop) == len(set(r.stop))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_render_equals_transformers_render(name):
    """Our light renderer must be transformers' (same sandbox, trim_blocks/lstrip_blocks, globals), on the prepared
    messages (the trimming rule) and today's date (transformers' strftime_now)."""
    tcu = pytest.importorskip("transformers.utils.chat_template_utils")
    e = T.get(name)
    T.pin_date(None)
    for conv in T.BATTERY:
        msgs = T.prepare_messages(e.jinja, conv)
        for agp in (True, False):
            try:
                ours = T.render(e.jinja, msgs, add_generation_prompt=agp, bos_token="<s>", eos_token=e.eos_token)
            except T.TemplateError:
                ours = "refused"
            try:
                theirs = tcu.render_jinja_template([msgs], chat_template=e.jinja, add_generation_prompt=agp,
                                                   bos_token="<s>", eos_token=e.eos_token)[0][0]
            except Exception as exc:  # transformers raises jinja2's TemplateError for raise_exception()
                theirs = "refused" if "TemplateError" in type(exc).__mro__[0].__name__ + type(exc).__name__ \
                    else exc
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
    assert T.match_registry(e.jinja, bos_token=e.bos_token, eos_token=e.eos_token, date=DATE) is e
    # A template hard-coding BOS is the same template (the tokenizer adds BOS; see the BOS rule).
    literal = e.jinja.replace("bos_token", "'<s>'")
    assert T.match_registry(literal, bos_token="<s>", eos_token=e.eos_token, date=DATE) is e


def test_lookalike_templates_are_not_proven():
    llama = T.get("llama-3.1").jinja
    # Without the dated system preamble it is a look-alike, not Llama 3.1's format.
    no_preamble = llama.replace('{{- "Cutting Knowledge Date: December 2023\\n" }}', "")
    assert no_preamble != llama and T.match_registry(no_preamble, eos_token="<|eot_id|>") is None
    # Qwen 2.5 without its default system prompt is plain ChatML, not qwen-2.5.
    assert T.match_registry(T.get("chatml").jinja).name == "chatml"
    # Gemma 2 refuses a system role: matched on the conversations it accepts, refusals included.
    assert T.match_registry(T.get("gemma-2").jinja).name == "gemma-2"
    refuses_all = "{{ raise_exception('no') }}"
    assert T.match_registry(refuses_all) is None


def test_llama_3_2_matches_only_with_the_same_date():
    e = T.get("llama-3.2")
    assert T.match_registry(e.jinja, eos_token="<|eot_id|>", date=DATE) is e
    # The 3.1 template prints a fixed date: a 3.2 model matches it only on that very day, and then its twin is equal.
    assert T.match_registry(e.jinja, eos_token="<|eot_id|>", date="2025-07-26").name == "llama-3.2"
    same_day = T.match_registry(e.jinja, eos_token="<|eot_id|>", date="2024-07-26")
    assert "Today Date: 26 Jul 2024" in same_day.ollama_for("2024-07-26")


def test_resolve_registry_name():
    r = T.resolve("chatml", None, "/nonexistent")
    assert (r.name, r.proven, r.source, r.ollama, r.stop) == ("chatml", True, "registry", T.get("chatml").ollama,
                                                             list(T.get("chatml").stop))


def test_resolve_auto_uses_the_model_template_and_proves_it(capsys):
    own = T.get("phi-3").jinja.replace("{{ eos_token }}", "{{- eos_token -}}")  # spelled differently, same output
    r = T.resolve("auto", own, "/nonexistent", bos_token="<s>", eos_token="<|endoftext|>")
    assert r.jinja == own and r.registry_match == "phi-3.5" and r.proven and r.ollama == T.get("phi-3").ollama
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
    assert r.source == "file" and r.registry_match == "gemma-3" and r.proven
    with pytest.raises(OptionsError, match="file not found"):
        T.resolve("templates/missing.jinja", None, tmp_path)
    with pytest.raises(OptionsError, match=r"\.\."):
        T.resolve("../escape.jinja", None, tmp_path)
    (tmp_path / "templates" / "broken.jinja").write_text("{% for m in messages %}")
    with pytest.raises(OptionsError, match="syntax error"):
        T.resolve("templates/broken.jinja", None, tmp_path)


def test_resolve_unknown_name_lists_choices():
    with pytest.raises(OptionsError, match="choose from llama-3.1, llama-3.2, qwen-2.5"):
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
