"""Every registry Ollama TEMPLATE, rendered by the real Go text/template the way Ollama renders it, equals the
registry's Jinja template rendered like transformers does.

Needs Go (Debian's golang-go): marked e2e, so a missing Go skips here and fails in CI (KOLO_REQUIRE_E2E=1).
"""

from __future__ import annotations

import itertools

import pytest

from kolo_trainer import templates as T
from kolo_trainer.templates import gorender

pytestmark = pytest.mark.e2e

SYSTEM = "You are terse.\nNever say \"maybe\"."
CONTENTS = {
    "plain": "What is the capital of France?",
    "quotes": 'He said "no" and she said \'yes\' ({{ .Content }} {% raw %} `tick`)',
    "newlines": "first line\nsecond line\n\n\tindented\n",
    "unicode": "naïve café — 日本語 🙂 \u00a0nbsp",
}


@pytest.fixture(scope="module", autouse=True)
def _go():
    if not gorender.available():
        pytest.skip("Go is not installed (apt-get install golang-go): cannot render Ollama templates")
    gorender.binary()  # build once, outside the timed tests


def _conversations():
    """single turn / multi-turn x with / without system x every awkward content, ending with user or assistant."""
    out = []
    for (kind, text), system, turns in itertools.product(CONTENTS.items(), (None, SYSTEM), (1, 3)):
        msgs = [{"role": "system", "content": system}] if system else []
        for t in range(turns):
            msgs.append({"role": "user", "content": f"{text} #{t}"})
            msgs.append({"role": "assistant", "content": f"reply {t}: {text}"})
        out.append(msgs)  # a complete conversation (what training renders)
        out.append(msgs[:-1])  # waiting for the next reply (what Ollama renders at chat time)
    return out


CONVERSATIONS = _conversations() + [list(c) for c in T.BATTERY]


@pytest.mark.parametrize("name", T.names())
def test_go_template_renders_exactly_like_the_jinja_template(name):
    e = T.get(name)
    go = gorender.render_many(e.ollama, CONVERSATIONS)
    for conv, got in zip(CONVERSATIONS, go):
        agp = conv[-1]["role"] != "assistant"
        want = T.render(e.jinja, conv, add_generation_prompt=agp, bos_token="")
        assert got == want, (name, conv)
    # And the library helper export uses at run time agrees.
    assert T.check_ollama_equivalence(e.jinja, e.ollama, conversations=CONVERSATIONS) == []


@pytest.mark.parametrize("name", T.names())
def test_modelfile_system_is_used_like_a_system_message(name):
    """Ollama prepends the Modelfile SYSTEM when the request has no system message of its own."""
    e = T.get(name)
    chat = [{"role": "user", "content": "hi"}]
    via_modelfile = gorender.render(e.ollama, chat, system=SYSTEM)
    assert via_modelfile == T.render(e.jinja, [{"role": "system", "content": SYSTEM}] + chat,
                                     add_generation_prompt=True)
    # A request's own system message wins over the Modelfile's.
    own = [{"role": "system", "content": "Own."}] + chat
    assert gorender.render(e.ollama, own, system=SYSTEM) == T.render(e.jinja, own, add_generation_prompt=True)


def test_a_broken_twin_is_caught():
    """The comparison can fail: a Go template missing one newline differs, and the helper says where."""
    e = T.get("chatml")
    broken = e.ollama.replace("<|im_end|>\n", "<|im_end|>", 1)
    problems = T.check_ollama_equivalence(e.jinja, broken)
    assert problems and "differ at character" in problems[0]


def test_ollama_semantics_collate_and_json():
    """The renderer reproduces Ollama's data: same-role messages merged with a blank line, .System kept in
    .Messages, and Ollama's json function."""
    tpl = "{{ .System }}|{{ range .Messages }}{{ .Role }}={{ json .Content }};{{ end }}"
    msgs = [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
            {"role": "user", "content": "x"}, {"role": "user", "content": 'y"'}]
    assert gorender.render(tpl, msgs) == 'a\n\nb|system="a\\n\\nb";user="x\\n\\ny\\"";'


def test_go_errors_are_reported():
    with pytest.raises(gorender.GoRenderError, match="does not parse"):
        gorender.render("{{ range .Messages }", [])
    with pytest.raises(gorender.GoRenderError, match="only Messages-style templates"):
        gorender.render("{{ .Prompt }}", [{"role": "user", "content": "x"}])
