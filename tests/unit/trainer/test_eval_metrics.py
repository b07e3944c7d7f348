"""kolo eval's arithmetic (kolo_trainer.eval.metrics) against numbers computed another way, and the host's judge
parsing (kolo_cli.commands.eval): what the e2e suite cannot pin down exactly."""

from __future__ import annotations

import math

import pytest

np = pytest.importorskip("numpy")


def test_tally_matches_a_direct_computation() -> None:
    from kolo_trainer.eval.metrics import Tally, log_softmax, positions

    assert positions([-100, -100, 5, 6, -100, 7]) == [2, 3, 5]
    rng = np.random.default_rng(0)
    ref, cand = rng.normal(size=(4, 7)) * 3, rng.normal(size=(4, 7)) * 3
    targets = [1, 0, 6, 3]
    t = Tally()
    t.add(ref, cand, targets)
    p = np.exp(ref) / np.exp(ref).sum(-1, keepdims=True)
    q = np.exp(cand) / np.exp(cand).sum(-1, keepdims=True)
    kl = np.mean([sum(p[i, v] * math.log(p[i, v] / q[i, v]) for v in range(7)) for i in range(4)])
    nll = -np.mean([math.log(q[i, targets[i]]) for i in range(4)])
    r = t.result()
    assert r["kl"] == pytest.approx(kl, rel=1e-6) and r["loss"] == pytest.approx(nll, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert r["top1"] == np.mean(ref.argmax(-1) == cand.argmax(-1)) and r["positions"] == 4
    same = Tally()
    same.add(ref, ref, targets)
    assert same.result()["kl"] == 0 and same.result()["top1"] == 1
    # a padded vocabulary (one more column) is compared on the shared ids
    padded = Tally()
    padded.add(ref, np.concatenate([ref, np.full((4, 1), -1e9)], axis=1), targets)
    assert padded.result()["kl"] == pytest.approx(0, abs=1e-9)
    assert np.allclose(np.exp(log_softmax(ref)).sum(-1), 1)


def test_recommend_takes_the_smallest_within_the_budget() -> None:
    from kolo_trainer.eval.metrics import recommend

    res = {"F16": {"positions": 9, "kl": 1e-7, "top1": 1.0}, "Q8_0": {"positions": 9, "kl": 0.001, "top1": 0.99},
           "Q4_0": {"positions": 9, "kl": 0.2, "top1": 0.7}}
    sizes = {"F16": 100, "Q8_0": 53, "Q4_0": 28}
    assert recommend(res, sizes, 0.05, 0.9)["quantization"] == "Q8_0"
    assert recommend(res, sizes, 1.0, 0.5)["quantization"] == "Q4_0"
    none = recommend(res, sizes, 0.0, 1.0)
    assert none["quantization"] is None and "no GGUF stays within KL <= 0.0" in none["reason"]


def test_judge_options_and_replies() -> None:
    from kolo_cli.commands.eval import JUDGE_PROMPT, judge_prompt, parse_judge, parse_scores

    spec, problems = parse_judge("http://127.0.0.1:9/v1/", "m")
    assert not problems and spec["url"] == "http://127.0.0.1:9/v1/chat/completions"
    assert parse_judge("https://x.example/v1/chat/completions", "m")[0]["url"].endswith("/v1/chat/completions")
    assert parse_judge("http://x.example/v1", None)[1] == ["--judge URL needs --judge-model NAME (the model the API "
                                                          "should use)"]
    assert "KOLO_JUDGE_API_KEY" in parse_judge("https://u:secret@x.example/v1", "m")[1][0]
    assert "KOLO_JUDGE_API_KEY" in parse_judge("https://x.example/v1?api_key=secret", "m")[1][0]
    assert parse_judge("ftp://x", "m")[1] and parse_judge(None, "m")[1] == ["--judge-model needs --judge URL"]
    text = judge_prompt("Q {x}?", "R", "")
    assert "Q {x}?" in text and "(empty)" in text and text.startswith(JUDGE_PROMPT.split("<<")[0])
    assert parse_scores('ok: {"correctness": 4, "relevancy": 5, "reason": "fine"}') == \
        {"correctness": 4, "relevancy": 5, "reason": "fine"}
    assert "error" in parse_scores('{"correctness": 9, "relevancy": 5}')
    assert "error" in parse_scores("no json here") and "error" in parse_scores('{"correctness": true}')
