"""The 15 real instruct families (tests/fixtures/chat_templates/families.json): kolo's registry holds each vendor's
template byte for byte, ``--chat-template auto`` finds it by rendering, and its Go twin -- rendered by the real
Go text/template the way Ollama renders chats -- equals it. Plus Ollama's own testdata renderings, reproduced by
kolo's renderer, and Ollama's thinking behaviour.

Needs the llama-cpp-python sdist (scripts/install.sh caches it) for the vendors' files, and Go: marked e2e, so a
missing one skips here and fails in CI (KOLO_REQUIRE_E2E=1).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from kolo_trainer import templates as T
from kolo_trainer.templates import gorender

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
FAMILIES = json.loads((FIXTURES / "families.json").read_text(encoding="utf-8"))["families"]
OLLAMA = json.loads((FIXTURES / "ollama_testdata.json").read_text(encoding="utf-8"))
DATE = "2026-11-30"


@pytest.fixture(scope="module")
def sdist_files() -> dict[str, str]:
    """Every models/templates/*.jinja of the sdist the install cached, by path inside vendor/."""
    from kolo_trainer.export import converter

    path = converter.sdist_path(converter.installed_version())
    if not path.is_file():
        pytest.skip(f"the llama-cpp-python sdist is not cached at {path} (run scripts/install.sh)")
    out = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if "/vendor/llama.cpp/models/templates/" in m.name and m.name.endswith(".jinja"):
                out["vendor/" + m.name.split("/vendor/", 1)[1]] = tar.extractfile(m).read().decode("utf-8")
    return out


@pytest.fixture(scope="module", autouse=True)
def _go():
    if not gorender.available():
        pytest.skip("Go is not installed (apt-get install golang-go): cannot render Ollama templates")
    gorender.binary()


def vendor_jinja(fam: dict, sdist_files: dict[str, str]) -> str:
    if fam["source"] in sdist_files:
        return sdist_files[fam["source"]]
    return T.get(fam["entry"]).jinja  # Gemma 3, Phi-4, Mistral v0.3: not a file of the sdist (source recorded)


def test_fifteen_families():
    assert len(FAMILIES) == 15 and len({f["family"] for f in FAMILIES}) == 15


@pytest.mark.parametrize("fam", FAMILIES, ids=[f["family"] for f in FAMILIES])
def test_registry_holds_the_vendor_template_byte_for_byte(fam, sdist_files):
    e = T.get(fam["entry"])
    if fam["source"] in sdist_files:
        assert e.jinja == sdist_files[fam["source"]]
    # The vendor's end-of-sequence strings (tokenizer and generation_config) are all stops.
    assert {fam["eos_token"], *fam["generation_eos"]} <= set(e.stop)
    assert set(e.special_tokens) <= set(fam["special_tokens"])


@pytest.mark.parametrize("fam", FAMILIES, ids=[f["family"] for f in FAMILIES])
def test_auto_finds_the_twin_by_rendering_and_the_twin_is_proven(fam, sdist_files):
    jinja = vendor_jinja(fam, sdist_files)
    r = T.resolve("auto", jinja, "/x", bos_token=fam["bos_token"] or "", eos_token=fam["eos_token"],
                  emit_warning=False, date=DATE)
    assert r.proven and r.ollama and r.registry_match == fam["entry"] and r.warning is None
    # Proven here, with the real Go renderer, on the battery (date and trim rules applied).
    assert T.check_ollama_equivalence(jinja, r.ollama, bos_token=fam["bos_token"] or "",
                                      eos_token=fam["eos_token"], date=DATE) == []
    # Stops: the family's, and the tokenizer's EOS; never shorter than the family's own list.
    assert set(T.get(fam["entry"]).stop) <= set(r.stop) and fam["eos_token"] in r.stop
    T.pin_date(None)


def test_auto_is_never_by_name():
    """A look-alike does not get a vendor's twin: Llama 3.1's format without its preamble matches nothing."""
    jinja = T.get("llama-3.1").jinja.replace('{{- "Cutting Knowledge Date: December 2023\\n" }}', "")
    r = T.resolve("auto", jinja, "/x", eos_token="<|eot_id|>", emit_warning=False, date=DATE)
    assert not r.proven and r.ollama is None and r.warning
    T.pin_date(None)


@pytest.mark.parametrize("name", sorted(OLLAMA["templates"]))
def test_ollamas_own_testdata_renders_the_same_with_kolos_renderer(name):
    case = OLLAMA["templates"][name]
    cases = list(OLLAMA["messages"])
    got = gorender.render_many(case["template"], [OLLAMA["messages"][c] for c in cases])
    for c, out in zip(cases, got):
        if name in OLLAMA["trailing_space_trimmed_by_ollama_test"] and out.endswith(" "):
            out = out[:-1]  # Ollama's own test does the same (template_test.go)
        assert out == case["expected"][c], (name, c)


def test_thinking_templates_render_as_ollama_does():
    """Qwen 3's twin reads .Thinking inside the messages range: Ollama infers the thinking capability and renders
    with think on (the template's default); think=false gives the template's enable_thinking=false prompt."""
    e = T.get("qwen-3")
    assert gorender.thinking_capability(e.ollama)
    assert not gorender.thinking_capability(T.get("chatml").ollama)
    chat = [{"role": "user", "content": "hi"}]
    assert gorender.render(e.ollama, chat) == T.render(e.jinja, chat, add_generation_prompt=True)
    off = T.render(e.jinja, chat, add_generation_prompt=True, enable_thinking=False)
    assert gorender.render(e.ollama, chat, think=False) == off and off.endswith("<think>\n\n</think>\n\n")
    # A reply Ollama parsed into thinking + content (the history a client sends back) renders like the
    # template's reasoning_content.
    hist = chat + [{"role": "assistant", "content": "4.", "thinking": "2+2"}]
    want = T.render(e.jinja, chat + [{"role": "assistant", "content": "4.", "reasoning_content": "2+2"}])
    assert gorender.render(e.ollama, hist) == want


def test_residual_differences_are_listed_for_every_vendor_family():
    for fam in FAMILIES:
        r = T.resolve(fam["entry"], None, "/x", date=DATE)
        if T.trims(r.jinja):
            assert any("whitespace" in x for x in r.residual), fam["family"]
        if T.get(fam["entry"]).date_format:
            assert any("date" in x for x in r.residual) and r.date == DATE, fam["family"]
    T.pin_date(None)
