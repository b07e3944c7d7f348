"""A real `kolo serve` process for tests (plain module, imported by name): start on a free loopback port, wait
for /health, talk to it with the shipped Python client, stop or SIGKILL it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from kolo_cli.server.client import TrainerClient

#: Fast training on the tiny model (see tests/e2e/train_helpers.py): a full fine-tune, a few steps per epoch.
FAST = {"model_name": "models/tiny", "training_type": "standard", "batch_size": 4, "learning_rate": 0.002,
        "warmup_steps": 1, "logging_steps": 1, "seed": 7, "max_seq_length": 128}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    #: The verb that serves the app: `kolo serve`, or `kolo chat RUN --web` (tests/server/test_chat_api.py).
    verb: tuple[str, ...] = ("serve",)
    http_timeout = 120

    def __init__(self, kolo: Any, root: Path, args: list[str], runtime: str = "local"):
        self.kolo, self.root, self.args, self.runtime = kolo, root, args, runtime
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = root.parent / f"serve-{id(self)}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return (self.root / "server" / "api_key").read_text().strip()

    def start(self, timeout: float = 60) -> "Server":
        self.port = free_port()
        out = open(self.log, "a")
        self.proc = self.kolo.popen("--runtime", self.runtime, *self.verb, "--port", str(self.port), *self.args,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={"KOLO_STOP_GRACE_S": "20"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kolo {self.verb[0]} exited {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kolo {self.verb[0]} did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def client(self, key: str | None = None) -> TrainerClient:
        return TrainerClient(self.url, key if key is not None else self.key)

    def http(self, key: str | None = "") -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.http_timeout)

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL the server alone (as the OOM killer would); its trainers get SIGTERM from the kernel."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
