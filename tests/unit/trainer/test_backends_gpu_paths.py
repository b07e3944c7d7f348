"""The GPU-side decisions of train/backends.py that can be checked on a machine without a GPU.

* Device detection: the real probe runs on this machine (no NVIDIA GPU: cpu). The case "a GPU is there but torch
  cannot start CUDA" (e.g. a driver older than 580 for the cu130 torch) cannot happen for real here, so only the
  probe's answer (:class:`CudaProbe`) is given by hand; what kolo decides from it is the real code.
* unsloth's exceptions: unsloth does not import without a CUDA GPU, so a stand-in ``unsloth`` module raises the
  exceptions unsloth 2026.10.5 raises (same types, same messages) to check the mapping and the call kolo makes.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from kolo_trainer.errors import KoloError, OptionsError
from kolo_trainer.options import TrainOptions
from kolo_trainer.train import backends
from kolo_trainer.train.backends import CudaProbe


def test_real_probe_on_this_machine_trains_on_cpu():
    pytest.importorskip("torch")
    if backends.nvidia_present():
        pytest.skip("this machine has an NVIDIA GPU: scripts/gpu_smoke.sh covers it")
    probe = backends.probe_cuda()
    assert (probe.available, probe.nvidia_present, probe.driver) == (False, False, None)
    assert backends.detect_device().kind == "cpu"


def test_gpu_with_an_old_driver_stops_instead_of_training_on_cpu():
    probe = CudaProbe(torch_cuda="13.0", available=False, nvidia_present=True, driver="550.54.14",
                      init_error="The NVIDIA driver on your system is too old (found version 12040)")
    with pytest.raises(KoloError) as e:
        backends.detect_device(probe)
    assert "550.54.14 is older than 580" in e.value.message and "too old (found version 12040)" in e.value.message
    assert "driver >= 580" in e.value.hint


def test_gpu_torch_cannot_start_with_a_new_driver_names_the_cuda_error():
    probe = CudaProbe(torch_cuda="13.0", available=False, nvidia_present=True, driver="580.65.06",
                      init_error="CUDA driver initialization failed, you might not have a CUDA gpu.")
    with pytest.raises(KoloError, match=r"torch \(CUDA 13.0\) cannot initialise the GPU \(CUDA driver init"):
        backends.detect_device(probe)


@pytest.mark.parametrize("probe", [
    CudaProbe(torch_cuda=None, available=False, init_error="", nvidia_present=True, driver="550.1"),  # CPU torch
    CudaProbe(torch_cuda="13.0", available=False, init_error="", nvidia_present=False, driver=None),  # no GPU
])
def test_no_usable_gpu_meant_is_cpu(probe):
    assert backends.detect_device(probe).kind == "cpu"


def test_hidden_gpus_mean_cpu_on_purpose(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert backends.nvidia_present() is False


@pytest.mark.parametrize("version,bad", [("575.57.08", True), ("580.65.06", False), ("590.1", False),
                                         (None, False), ("N/A", False)])
def test_driver_problem(version, bad):
    assert (backends.driver_problem(version) is not None) == bad


def test_unsloth_environment_keeps_the_data_root_clean(monkeypatch, tmp_path):
    monkeypatch.delenv("UNSLOTH_DISABLE_STATISTICS", raising=False)
    monkeypatch.delenv("UNSLOTH_COMPILE_LOCATION", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    backends.unsloth_environment()
    import os

    assert os.environ["UNSLOTH_DISABLE_STATISTICS"] == "1"
    assert Path(os.environ["UNSLOTH_COMPILE_LOCATION"]) == tmp_path / "cache" / "kolo" / "unsloth_compiled_cache"
    monkeypatch.setenv("UNSLOTH_COMPILE_LOCATION", "/somewhere/else")
    backends.unsloth_environment()
    assert os.environ["UNSLOTH_COMPILE_LOCATION"] == "/somewhere/else"  # the user's choice wins


# ---------------------------------------------------------------------------------- unsloth's exceptions
BAD_MODEL = RuntimeError("Unsloth: No config file found - are you sure the `model_name` is correct?\nmore")
BAD_MODULE = TypeError("Unsloth: Module = q_proj is not allowed. Only 'lm_head' and 'embed_tokens' is allowed.")


def test_mapping_of_unsloth_exceptions():
    err = backends.unsloth_error("load", "models/x", BAD_MODEL, [])
    assert type(err) is KoloError and "cannot load base model 'models/x': Unsloth: No config file" in err.message
    assert "--backend hf" in err.hint and "more" not in err.message
    err = backends.unsloth_error("peft", "models/x", BAD_MODULE, ["lm_head", "q_proj"])
    assert isinstance(err, OptionsError) and err.exit_code == 2
    assert "--modules-to-save q_proj" in err.message and "lm_head" in err.hint
    assert isinstance(backends.unsloth_error("load", "m", OSError("gone"), []), KoloError)
    assert backends.unsloth_error("load", "m", ZeroDivisionError("bug"), []) is None  # a bug stays a traceback
    assert backends.unsloth_error("peft", "m", RuntimeError("bug"), []) is None


class _StandIn:
    """``unsloth.FastLanguageModel`` as far as load_unsloth uses it; records the calls."""

    calls: list[tuple[str, dict]] = []
    load_error: Exception | None = None
    peft_error: Exception | None = None

    @classmethod
    def from_pretrained(cls, **kw):
        cls.calls.append(("from_pretrained", kw))
        if cls.load_error:
            raise cls.load_error
        from transformers import LlamaConfig, LlamaForCausalLM

        return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=2)), object()

    @classmethod
    def get_peft_model(cls, model, **kw):
        cls.calls.append(("get_peft_model", kw))
        raise cls.peft_error


@pytest.fixture
def standin(monkeypatch):
    pytest.importorskip("torch")
    mod = types.ModuleType("unsloth")
    mod.FastLanguageModel = _StandIn
    monkeypatch.setitem(sys.modules, "unsloth", mod)
    _StandIn.calls = []
    return _StandIn


def _opts(**kw) -> TrainOptions:
    return TrainOptions(base_model="models/x", backend="unsloth", **kw)


def test_load_unsloth_keeps_the_exact_model_and_maps_a_bad_model(standin):
    standin.load_error = BAD_MODEL
    with pytest.raises(KoloError, match="cannot load base model"):
        backends.load_unsloth("models/x", _opts(method="lora"), backends.Device("cuda", "GPU", True), True)
    kw = standin.calls[0][1]
    assert kw["use_exact_model_name"] is True  # no silent swap to another repo
    assert kw["load_in_4bit"] is False and kw["model_name"] == "models/x"


def test_load_unsloth_maps_modules_to_save_it_refuses(standin):
    standin.load_error, standin.peft_error = None, BAD_MODULE
    with pytest.raises(OptionsError, match="--modules-to-save q_proj"):
        backends.load_unsloth("models/x", _opts(method="lora", modules_to_save=["q_proj"]),
                              backends.Device("cuda", "GPU", True), True)
    assert [c for c, _ in standin.calls] == ["from_pretrained", "get_peft_model"]
