"""Host-side errors: everything that can go wrong between `kolo` and the Docker engine.

They subclass :class:`kolo_trainer.errors.KoloError`, so the one handler in ``cli.main`` prints them as one line
plus a hint naming the fix. Docker problems use exit code 7, which no trainer error uses: the trainer's exit code
becomes kolo's exit code, so a script can still tell "the container was not there" from "training failed".
"""

from __future__ import annotations

from kolo_trainer.errors import KoloError


class DockerError(KoloError):
    """A problem with the Docker engine or the kolo container (not with the user's options or data)."""

    exit_code = 7


class DockerUnavailable(DockerError):
    def __init__(self, detail: str = ""):
        super().__init__(
            "cannot reach the Docker daemon" + (f" ({detail})" if detail else ""),
            "start Docker Desktop / dockerd (check `docker info`), or use `--runtime local`",
        )


class DockerCliMissing(DockerError):
    def __init__(self) -> None:
        super().__init__("the `docker` command is not installed or not on PATH",
                         "install Docker Desktop / docker.io, or use `--runtime local`")


class ContainerMissing(DockerError):
    def __init__(self, name: str):
        super().__init__(f"container {name!r} does not exist", "run `kolo up` to create and start it")
        self.name = name


class ContainerStopped(DockerError):
    def __init__(self, name: str, state: str = "stopped"):
        super().__init__(f"container {name!r} is not running ({state})", "run `kolo start` (or `kolo up`)")
        self.name = name


class ImageMissing(DockerError):
    def __init__(self, image: str):
        super().__init__(f"image {image!r} does not exist", "run `kolo build` (or pass --image / KOLO_IMAGE)")


class DataRootMismatch(DockerError):
    def __init__(self, name: str, mounted: str, wanted: str):
        super().__init__(
            f"container {name!r} mounts {mounted} at /var/kolo_data, but the data root is {wanted}",
            f"pass `--data-root {mounted}`, or recreate the container: `kolo down && kolo up --data-root {wanted}`",
        )


class Interrupted(KoloError):
    """Ctrl-C: the work was stopped (inside the container too). 130 is the shell's code for SIGINT."""

    exit_code = 130


class TrainerDied(KoloError):
    """The trainer process ended on a signal it did not handle (SIGKILL from the OOM killer, a `kill -9`).

    The exit code follows the shell's convention, 128 + signal number, so scripts see 137 for SIGKILL."""

    def __init__(self, message: str, hint: str, exit_code: int):
        super().__init__(message, hint)
        self.exit_code = exit_code


class ContainerGone(DockerError):
    """The container stopped (or was removed) while a trainer was running in it."""

    def __init__(self, name: str, state: str):
        super().__init__(f"container {name!r} {state} while the trainer was running in it",
                         "run `kolo start`, then the same command with --resume to continue from the last "
                         "checkpoint")
