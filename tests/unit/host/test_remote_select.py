"""Which Docker engine kolo talks to (--docker-host, --context, DOCKER_HOST, contexts) and when it is remote.

No daemon is needed: the options are checked before any engine is asked, contexts are real docker contexts (made
by the docker SDK in a temporary DOCKER_CONFIG), and the ssh:// path runs a real `ssh` program from PATH.

Limitation, stated here: no sshd runs in CI, so the ssh tests stop at the client's side. They show that kolo runs
the OpenSSH client with the URL's user, port and host and the `docker system dial-stdio` that docker itself uses,
and what kolo says when the connection fails or `ssh` is missing. tests/docker/test_remote_engine.py carries a real
engine's API through that same `ssh` argv (a stand-in `ssh` that runs dial-stdio locally).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from kolo_cli import docker_ctl
from kolo_cli.errors import DataRootMismatch, DockerError
from kolo_trainer.errors import OptionsError


@pytest.fixture()
def engine_env(monkeypatch, tmp_path):
    """A clean engine choice: no DOCKER_HOST/DOCKER_CONTEXT, an empty docker config folder, nothing selected."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    (cfg / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    monkeypatch.setattr(docker_ctl, "_chosen", {"via": None, "remote": None})
    return cfg


def _kolo_env(cfg: Path, **extra: str) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(cfg), "DOCKER_HOST": "", "DOCKER_CONTEXT": "", **extra}


def test_bad_engine_options_are_refused_before_any_engine_is_asked(kolo, engine_env) -> None:
    r = kolo("--docker-host", "gpu-box", "status", env=_kolo_env(engine_env))
    assert r.returncode == 2 and "--docker-host 'gpu-box' is not a Docker engine URL" in r.stderr, r.stderr
    assert "ssh://user@gpu-box" in r.stderr  # the hint shows the forms that work
    r = kolo("--docker-host", "ssh://me@box", "--context", "gpu", "status", env=_kolo_env(engine_env))
    assert r.returncode == 2 and "give one" in r.stderr, r.stderr
    r = kolo("--context", "no-such-context", "logs", env=_kolo_env(engine_env))
    assert r.returncode == 2 and "docker context 'no-such-context' does not exist" in r.stderr, r.stderr
    assert "docker context ls" in r.stderr and "Traceback" not in r.stderr


def test_the_chosen_engine_goes_to_every_docker_process_through_the_environment(engine_env, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "other")
    docker_ctl.select_engine(docker_host="ssh://me@gpu-box")
    assert os.environ["DOCKER_HOST"] == "ssh://me@gpu-box" and "DOCKER_CONTEXT" not in os.environ
    ep = docker_ctl.endpoint()
    assert (ep.url, ep.via) == ("ssh://me@gpu-box", "--docker-host")
    # a context replaces DOCKER_HOST (which the docker CLI would otherwise let win over DOCKER_CONTEXT)
    docker_ctl.select_engine(context="gpu")
    assert os.environ["DOCKER_CONTEXT"] == "gpu" and "DOCKER_HOST" not in os.environ
    with pytest.raises(OptionsError):
        docker_ctl.select_engine(docker_host="ftp://gpu-box")


@pytest.mark.parametrize("url, setting, remote", [
    (None, None, False),                                   # this machine's default socket
    ("unix:///var/run/docker.sock", None, False),
    ("unix:///run/user/1000/docker.sock", None, False),    # rootless: shares this machine's folders
    ("ssh://me@gpu-box", None, True),
    ("tcp://gpu-box:2376", None, True),
    ("unix:///tmp/second.sock", True, True),               # a second local daemon that must not share the folders
    ("ssh://me@gpu-box", False, False),                    # an explicit setting always wins
])
def test_which_engines_are_remote(engine_env, url, setting, remote) -> None:
    docker_ctl.select_engine(docker_host=url, remote=setting)
    assert docker_ctl.is_remote() is remote


def test_a_docker_context_names_the_engine(engine_env, monkeypatch) -> None:
    from docker.context import ContextAPI

    ContextAPI.create_context("gpu-box", host="ssh://me@gpu-box")
    assert (engine_env / "contexts" / "meta").is_dir()  # made where the docker CLI keeps them
    docker_ctl.select_engine(context="gpu-box")
    ep = docker_ctl.endpoint()
    assert ep.url.startswith("ssh://me@gpu-box") and ep.via == "--context gpu-box"
    assert docker_ctl.is_remote()
    # no option and no variable: the current context (`docker context use gpu-box`) decides, as for `docker`
    monkeypatch.delenv("DOCKER_CONTEXT")
    monkeypatch.setattr(docker_ctl, "_chosen", {"via": None, "remote": None})
    (engine_env / "config.json").write_text(json.dumps({"currentContext": "gpu-box"}))
    assert docker_ctl.endpoint().via == "context 'gpu-box'" and docker_ctl.is_remote()
    (engine_env / "config.json").write_text("{}")
    assert docker_ctl.endpoint().url is None and not docker_ctl.is_remote()


def _stub_ssh(folder: Path, log: Path, body: str) -> Path:
    folder.mkdir()
    ssh = folder / "ssh"
    ssh.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n{body}\n')
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    return folder


def test_ssh_engines_run_the_openssh_client_and_say_when_it_fails(kolo, engine_env, tmp_path) -> None:
    log = tmp_path / "ssh.log"
    bin_dir = _stub_ssh(tmp_path / "bin", log, 'echo "ssh: connect to host gpu-box port 2222: Connection refused" >&2'
                        "\nexit 255")
    env = _kolo_env(engine_env, PATH=f"{bin_dir}:{os.environ['PATH']}")
    r = kolo("--docker-host", "ssh://kolo@gpu-box:2222", "logs", env=env, timeout=60)
    assert r.returncode == 7 and "cannot reach the Docker daemon" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    calls = log.read_text().splitlines()
    assert calls and all(c.endswith("-- gpu-box docker system dial-stdio") for c in calls), calls
    assert "-l kolo" in calls[0] and "-p 2222" in calls[0]


def test_ssh_engines_need_the_ssh_program(kolo, engine_env, tmp_path) -> None:
    bare = tmp_path / "bare-bin"
    bare.mkdir()  # a PATH without ssh (kolo's own script names its interpreter by absolute path)
    r = kolo("--docker-host", "ssh://kolo@gpu-box", "logs", env=_kolo_env(engine_env, PATH=str(bare)))
    assert r.returncode == 7, r.stderr
    assert "ssh:// engines need the OpenSSH client (`ssh`), which is not on PATH" in r.stderr


def _container(mount: dict) -> SimpleNamespace:
    """A stand-in with the one thing check_data_root reads (the engine's inspect data); real ones in tests/docker."""
    return SimpleNamespace(name="kolo", attrs={"Mounts": [{"Destination": "/var/kolo_data", **mount}]})


def test_the_data_root_check_knows_volumes(engine_env, tmp_path) -> None:
    volume = _container({"Type": "volume", "Name": "kolo_data", "Source": "/var/lib/docker/volumes/kolo_data/_data"})
    with pytest.raises(DockerError, match="keeps its data root in the Docker volume 'kolo_data'") as e:
        docker_ctl.check_data_root(volume, tmp_path)
    assert "--remote" in e.value.hint
    bind = _container({"Type": "bind", "Source": "/somewhere/else"})
    with pytest.raises(DataRootMismatch):
        docker_ctl.check_data_root(bind, tmp_path)
    docker_ctl.check_data_root(_container({"Type": "bind", "Source": str(tmp_path)}), tmp_path)
    docker_ctl.select_engine(remote=True)  # a remote engine's data root is wherever its container has it
    docker_ctl.check_data_root(volume, tmp_path)
    docker_ctl.check_data_root(bind, tmp_path)


def test_pull_checks_its_arguments_before_any_engine(kolo, engine_env) -> None:
    env = _kolo_env(engine_env, DOCKER_HOST="unix:///nonexistent/docker.sock")  # never reached
    r = kolo("pull", "my-run", "--quantization", "Q9_X", env=env)
    assert r.returncode == 2 and "--quantization 'Q9_X' is not one of" in r.stderr, r.stderr
    r = kolo("pull", "../elsewhere", env=env)
    assert r.returncode == 2 and "RUN '../elsewhere'" in r.stderr, r.stderr
    r = kolo("--runtime", "local", "pull", "my-run", env=env)
    assert r.returncode == 2 and "--runtime local has none" in r.stderr, r.stderr
    r = kolo("pull", "my-run", env=env)  # only now the engine is asked
    assert r.returncode == 7 and "cannot reach the Docker daemon" in r.stderr, r.stderr
