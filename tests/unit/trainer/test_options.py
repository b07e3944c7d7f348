"""The one option definition: flags, argv, YAML and validation all derive from TrainOptions/ExportOptions."""

from __future__ import annotations

import math

import pytest

from kolo_trainer import spec
from kolo_trainer.errors import OptionsError
from kolo_trainer.options import ExportOptions, TrainOptions

ISSUE_FLAGS = ["--epochs", "--learning-rate", "--train-data", "--base-model", "--chat-template", "--lora-rank",
               "--lora-alpha", "--lora-dropout", "--max-seq-length", "--warmup-steps", "--save-steps",
               "--save-total-limit", "--seed", "--scheduler-type", "--batch-size", "--output-dir", "--quantization",
               "--weight-decay", "--resume"]


def test_every_kolo_flag_exists():
    flags = {i.flag for i in spec.describe(TrainOptions)}
    assert set(ISSUE_FLAGS) <= flags


def test_describe_kinds():
    infos = {i.name: i for i in spec.describe(TrainOptions)}
    assert infos["epochs"].kind == "int" and infos["epochs"].default == 3
    assert infos["weight_decay"].kind == "float"
    assert infos["resume"].kind == "bool" and infos["resume"].negative_flag == "--no-resume"
    assert infos["quantization"].kind == "list"
    assert infos["scheduler_type"].kind == "choice" and "cosine" in infos["scheduler_type"].choices
    assert infos["bf16"].optional and infos["bf16"].default is None
    assert all(i.help for i in infos.values()), "every option needs help text"


def test_explicit_zero_and_false_survive_to_argv():
    _, explicit = spec.merge(TrainOptions, {}, {"weight_decay": "0", "warmup_steps": "0", "resume": False})
    argv = spec.to_argv(TrainOptions, explicit)
    assert argv == ["--warmup-steps=0", "--weight-decay=0.0", "--no-resume"]


def test_defaults_are_not_sent():
    _, explicit = spec.merge(TrainOptions, {}, {})
    assert explicit == {} and spec.to_argv(TrainOptions, explicit) == []


@pytest.mark.parametrize("values", [
    {"epochs": 3, "lora_rank": 16, "weight_decay": 0.0, "output_dir": "it's a test"},
    {"quantization": ["q4_k_m", "F16"], "target_modules": ["q_proj", "v_proj"], "bf16": False},
    {"learning_rate": 2e-5, "eval_split": 0.05, "sample_prompt": "hi; rm -rf / \"x\""},
])
def test_to_argv_is_the_inverse_of_the_parser(values):
    model, explicit = spec.merge(TrainOptions, {}, values)
    parsed, _ = spec.parse_argv(TrainOptions, spec.to_argv(TrainOptions, explicit))
    assert parsed == model


def test_yaml_and_flags_merge_flags_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 5\nlora-rank: 8\nweight_decay: 0.1\nquantization: [Q8_0]\n")
    config = spec.load_yaml(TrainOptions, cfg)
    model, explicit = spec.merge(TrainOptions, config, {"epochs": "2", "weight_decay": "0"})
    assert model.epochs == 2 and model.lora_rank == 8 and model.weight_decay == 0.0
    assert model.quantization == ["Q8_0"]
    assert explicit == {"epochs": 2, "lora_rank": 8, "weight_decay": 0.0, "quantization": ["Q8_0"]}


def test_yaml_unknown_key_and_bad_yaml(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 5\nlearnin_rate: 1e-4\n")
    with pytest.raises(OptionsError, match="unknown key 'learnin_rate'"):
        spec.load_yaml(TrainOptions, cfg)
    cfg.write_text("epochs: [1\n")
    with pytest.raises(OptionsError, match=r"c.yaml:\d+: invalid YAML"):
        spec.load_yaml(TrainOptions, cfg)
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(OptionsError, match="must be a mapping"):
        spec.load_yaml(TrainOptions, cfg)


def test_all_problems_reported_together():
    with pytest.raises(OptionsError) as e:
        spec.merge(TrainOptions, {}, {"lora_rank": "0", "learning_rate": "-1", "scheduler_type": "weird",
                                      "quantization": ["Q9"], "epochs": "many", "weight_decay": "nan"})
    problems = e.value.problems
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    for flag in ("--lora-rank", "--learning-rate", "--scheduler-type", "--quantization", "--epochs",
                 "--weight-decay"):
        assert flag in text
    assert "finite" in text


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_refused(value):
    assert not math.isfinite(float(value))
    with pytest.raises(OptionsError, match="finite"):
        spec.merge(TrainOptions, {}, {"learning_rate": value})


def test_quantization_normalised_and_deduplicated():
    model, _ = spec.merge(TrainOptions, {}, {"quantization": ["q4_k_m", "Q4_K_M", "f16"]})
    assert model.quantization == ["Q4_K_M", "F16"]


def test_export_options_require_output_dir():
    with pytest.raises(OptionsError, match="--output-dir: required"):
        spec.merge(ExportOptions, {}, {})
    model, explicit = spec.merge(ExportOptions, {}, {"output_dir": "run1", "verify": False})
    assert spec.to_argv(ExportOptions, explicit) == ["--output-dir=run1", "--no-verify"]


@pytest.mark.parametrize("field, value", [("base_model", "-h"), ("sample_prompt", "--help"), ("output_dir", "-x"),
                                          ("chat_template", "--version")])
def test_values_that_look_like_options_stay_values(field, value):
    """Every value travels glued to its flag, so the trainer's parser never reads it as an option."""
    _, explicit = spec.merge(TrainOptions, {}, {field: value})
    argv = spec.to_argv(TrainOptions, explicit)
    assert argv == [f"{spec.flag_name(field)}={value}"]
    model, again = spec.parse_argv(TrainOptions, argv)
    assert again == {field: value} and getattr(model, field) == value


def test_flag_prefixes_are_not_options():
    with pytest.raises(OptionsError, match="unrecognized arguments: --epoch=3"):
        spec.parse_argv(TrainOptions, ["--epoch=3"])
