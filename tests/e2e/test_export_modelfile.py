"""Modelfile writing: every value survives Ollama's parser (our port of parser.ParseFile) unchanged, and what
cannot be written is refused with a message instead of being silently altered. Pure Python, no model."""

from __future__ import annotations

import pytest

from kolo_trainer.errors import ExportError
from kolo_trainer.export import modelfile

NASTY = [
    "plain",
    'She said "hi" and left',
    '"starts and ends with quotes"',
    '"',
    '""',
    'ends with two quotes ""',
    "line one\nline two\n\n  indented\ttab",
    "\nleading and trailing newlines\n",
    "  padded  ",
    "{{ .System }} {{- if }} {% raw %} \\n backslash",
    "unicode: Grüße, 你好, 🙂, café — «»",
    "# not a comment\nFROM ./evil.gguf\nPARAMETER stop x",
    'TEMPLATE """',  # contains """ : refused below
]


def _render(**kw):
    base = dict(gguf_file="m-Q4_K_M.gguf", template="{{ .Prompt }}", stop=["<|im_end|>"], num_ctx=2048,
                system=None, temperature=0.7, top_p=0.9)
    base.update(kw)
    return modelfile.render(**base)


@pytest.mark.parametrize("value", [v for v in NASTY if '"""' not in v])
def test_system_template_and_stop_round_trip(value):
    text = _render(system=value, template=value, stop=[value, "<|im_end|>"])
    parsed = modelfile.parse(text)
    assert parsed.from_ == "./m-Q4_K_M.gguf"
    assert parsed.system == value
    assert parsed.template == value
    assert parsed.parameters["stop"] == [value, "<|im_end|>"]
    assert parsed.parameters["num_ctx"] == ["2048"]
    assert parsed.parameters["temperature"] == ["0.7"] and parsed.parameters["top_p"] == ["0.9"]


def test_file_names_with_spaces_and_quotes_survive():
    parsed = modelfile.parse(_render(gguf_file='my "run" v2-F16.gguf', adapter_file="a b-lora-F16.gguf"))
    assert parsed.from_ == './my "run" v2-F16.gguf' and parsed.adapter == "./a b-lora-F16.gguf"


@pytest.mark.parametrize("bad,what", [('a """ b', '"""'), ("bell\x07", "drops"), ("zero\u200bwidth", "drops")])
def test_unwritable_values_are_refused(bad, what):
    with pytest.raises(ExportError, match=what):
        _render(system=bad)
    with pytest.raises(ExportError, match=what):
        _render(stop=[bad])


def test_no_template_is_said_loudly_and_parses():
    text = _render(template=None, template_note="no Go template could be proven for 'x'")
    assert "# WARNING: no Go template could be proven for 'x'" in text
    assert modelfile.parse(text).template is None


def test_parser_rejects_what_ollama_rejects():
    with pytest.raises(ExportError, match="no FROM"):
        modelfile.parse('SYSTEM """hi"""\n')
    with pytest.raises(ExportError, match="unknown instruction"):
        modelfile.parse("FROM ./x.gguf\nFROBNICATE 1\n")
    with pytest.raises(ExportError, match="unterminated"):
        modelfile.parse('FROM ./x.gguf\nSYSTEM """never closed\n')
