"""Static checks of Dockerfile, .dockerignore and docker-compose.yml.

The real image cannot be built on these machines (its CUDA base image cannot be pulled: no registry), so what can
be checked without building is checked here: the compose file parsed with PyYAML (GPU reservation, loopback-only
ports, no secrets, HF_TOKEN from the environment), the Dockerfile parsed into instructions (pinned base, every
Python version read from container/pyproject.toml, no SSH server or password, a HEALTHCHECK, a non-root user,
layer order), and the requirements reader the Dockerfile installs through, run for real.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = REPO / "container" / "pyproject.toml"
DATA_SOURCE = "${KOLO_DATA:-./kolo_data}"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and line continuations joined, as Docker reads them."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif obj is not None:
        yield str(obj)


# ----------------------------------------------------------------------------------------------- compose
def test_compose_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"kolo", "ollama", "open-webui"}
    assert "profiles" not in services["kolo"] and "profiles" not in services["ollama"]
    assert services["open-webui"]["profiles"] == ["webui"]
    assert services["kolo"]["build"]["dockerfile"] == "Dockerfile"
    assert (REPO / services["kolo"]["build"]["context"] / "Dockerfile").is_file()


def test_compose_names_match_the_cli_defaults(compose):
    from kolo_cli.state import CONTAINER_DATA_ROOT, DEFAULT_CONTAINER, DEFAULT_IMAGE

    kolo = compose["services"]["kolo"]
    assert kolo["image"] == "${KOLO_IMAGE:-%s}" % DEFAULT_IMAGE
    assert kolo["container_name"] == "${KOLO_CONTAINER:-%s}" % DEFAULT_CONTAINER
    assert "KOLO_DATA=" + CONTAINER_DATA_ROOT in kolo["environment"]


def test_compose_gpu_reservation(compose):
    for name in ("kolo", "ollama"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices, name


def test_compose_data_root_is_a_host_bind_mount(compose):
    kolo = compose["services"]["kolo"]["volumes"]
    data = [v for v in kolo if v["target"] == "/var/kolo_data"]
    assert data == [{"type": "bind", "source": DATA_SOURCE, "target": "/var/kolo_data",
                     "bind": {"create_host_path": True}}]
    assert {"type": "volume", "source": "hf_cache", "target": "/var/kolo_cache/huggingface"} in kolo
    assert "hf_cache" in compose["volumes"]
    ollama = [v for v in compose["services"]["ollama"]["volumes"] if v["target"] == "/var/kolo_data"]
    assert len(ollama) == 1 and ollama[0]["source"] == DATA_SOURCE and ollama[0]["read_only"] is True


def test_compose_hf_cache_volume_is_the_one_kolo_up_mounts(compose):
    from kolo_cli.docker_ctl import HF_CACHE_VOLUME

    # compose names a volume <project>_<volume>; `kolo up` (Docker SDK) mounts the same one, so both share downloads
    assert f"{compose['name']}_hf_cache" == HF_CACHE_VOLUME


def test_compose_hf_cache_path_matches_the_image():
    env = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ENV" for a in a.split())
    assert env["HF_HOME"] == "/var/kolo_cache/huggingface"


def test_compose_ports_are_loopback_only(compose):
    published = []
    for name, svc in compose["services"].items():
        for p in svc.get("ports", []):
            assert isinstance(p, str) and re.fullmatch(r"127\.0\.0\.1:\d+:\d+", p), f"{name}: {p!r}"
            published.append(int(p.split(":")[1]))
        assert svc.get("network_mode") != "host", name
        assert not svc.get("privileged"), name
    assert sorted(published) == [8080, 11434]


def test_compose_ports_are_the_ones_doctor_checks(compose):
    from kolo_cli.commands.lifecycle import COMPOSE_PORTS

    published = {int(p.split(":")[1]) for s in compose["services"].values() for p in s.get("ports", [])}
    assert published == set(COMPOSE_PORTS)


def test_compose_has_no_secrets(compose):
    env = compose["services"]["kolo"]["environment"]
    assert "HF_TOKEN" in env and "WANDB_API_KEY" in env  # bare names: the value comes from the caller's env
    for s in _strings(compose):
        assert not re.search(r"(?i)(password|passwd|secret|api_key|token)\s*[=:]\s*\S", s), s
        assert not re.search(r"hf_[A-Za-z0-9]{20,}", s), s


def test_compose_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        if name == "kolo":
            continue
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image!r} is not pinned to a version"
    assert compose["services"]["ollama"]["image"].startswith("ollama/ollama:")
    assert compose["services"]["open-webui"]["environment"]["OLLAMA_BASE_URL"] == "http://ollama:11434"


# ---------------------------------------------------------------------------------------------- Dockerfile
def test_dockerfile_base_image_is_pinned():
    ins = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["${CUDA_IMAGE}"]
    base = args["CUDA_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-devel-ubuntu\d+\.\d+", base), base


def test_dockerfile_versions_come_from_pyproject():
    text = " ".join(a for _, a in dockerfile_instructions())
    # no Python package pinned in the Dockerfile itself: a `name==version` here would be a second source
    assert not re.search(r"[A-Za-z0-9_.-]+(==|>=|~=)\d", text), re.search(r"[A-Za-z0-9_.-]+(==|>=|~=)\d", text)
    runs = [a for i, a in dockerfile_instructions() if i == "RUN"]
    assert any("requirements_from_pyproject.py" in r and "gpu,train,export" in r and "pip install -r" in r
               for r in runs)
    assert any("--only llama-cpp-python" in r and "-DGGML_CUDA=on" in r for r in runs)


def test_dockerfile_layer_order_keeps_torch_cached_on_code_changes():
    ins = dockerfile_instructions()
    idx = {k: next(n for n, (i, a) in enumerate(ins) if pred(i, a)) for k, pred in {
        "copy_pyproject": lambda i, a: i == "COPY" and "container/pyproject.toml" in a,
        "deps": lambda i, a: i == "RUN" and "pip install -r" in a,
        "llama": lambda i, a: i == "RUN" and "GGML_CUDA" in a,
        "copy_code": lambda i, a: i == "COPY" and a.split()[0] == "container/",
        "converter": lambda i, a: i == "RUN" and "kolo_trainer.export.converter install" in a,
    }.items()}
    assert idx["copy_pyproject"] < idx["deps"] < idx["llama"] < idx["copy_code"] < idx["converter"]
    # the early COPY carries exactly what the dependency layers read, nothing that changes with the code
    copy = ins[idx["copy_pyproject"]][1].split()
    assert copy[:-1] == ["container/pyproject.toml", "container/requirements_from_pyproject.py"]


def test_dockerfile_converter_command_exists():
    from kolo_trainer.export import converter

    # the Dockerfile runs `python -m kolo_trainer.export.converter install`; make sure that verb exists
    with pytest.raises(SystemExit) as e:
        converter.main(["install", "--help"])
    assert e.value.code == 0


def test_dockerfile_no_ssh_no_password_no_ports():
    ins = dockerfile_instructions()
    text = "\n".join(f"{i} {a}" for i, a in ins).lower()
    for bad in ("openssh", "sshd", "chpasswd", "passwd ", "password", "sudo"):
        assert bad not in text, bad
    assert not [a for i, a in ins if i == "EXPOSE"]


def test_dockerfile_runtime_settings():
    ins = dockerfile_instructions()
    names = [i for i, _ in ins]
    assert "HEALTHCHECK" in names
    health = next(a for i, a in ins if i == "HEALTHCHECK")
    assert "CMD" in health and "kolo_trainer" in health
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert names.index("USER") < names.index("CMD")
    assert [a for i, a in ins if i == "WORKDIR"][-1] == "/var/kolo_data"
    assert [a for i, a in ins if i == "CMD"] == ['["sleep", "infinity"]']
    assert names[-1] == "CMD" and "ENTRYPOINT" not in names


def test_dockerignore_is_an_allowlist():
    lines = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines[0] == "*" and "!container/" in lines
    assert [x for x in lines if x.startswith("!")] == ["!container/"]


# ------------------------------------------------------------------------------- the requirements reader
def _reader(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "container" / "requirements_from_pyproject.py"),
                           str(PYPROJECT), *args], capture_output=True, text=True, timeout=60)


def test_reader_prints_every_requirement_of_the_extras():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    expected = list(project["dependencies"])
    for e in ("gpu", "train", "export"):
        expected += [r for r in project["optional-dependencies"][e] if r not in expected]
    r = _reader("gpu,train,export")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == expected

    deps = _reader("gpu,train,export", "--exclude", "llama-cpp-python").stdout.split()
    llama = _reader("export", "--only", "llama-cpp-python").stdout.split()
    assert sorted(deps + llama) == sorted(expected)
    assert llama == [r for r in project["optional-dependencies"]["export"] if r.startswith("llama-cpp-python")]
    assert re.fullmatch(r"llama-cpp-python==[\d.]+", llama[0])


def test_reader_refuses_unknown_extras_and_names():
    r = _reader("gpu,nope")
    assert r.returncode != 0 and "unknown extra(s) nope" in r.stderr
    r = _reader("train", "--only", "llama-cpp-python")
    assert r.returncode != 0 and "llama-cpp-python not in the extras train" in r.stderr
