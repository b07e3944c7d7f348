"""`kolo serve`: the Training Manager (REST API, job worker, dashboard) for the data root.

FastAPI, uvicorn and SQLModel are imported inside the verb only: `kolo --help` stays fast and light
(tests/unit/host/test_light.py), and the host works without the ``server`` extra until `kolo serve` runs.
"""

from __future__ import annotations

import ipaddress
import typer

from kolo_trainer.errors import KoloError, OptionsError

from ..state import STATE

HELP = (
    "Run the Training Manager: a REST API (OpenAPI at /docs), a job worker and a web dashboard for this data "
    "root.\n\nBound to 127.0.0.1 unless --host says otherwise; every API call needs the key printed at first start "
    "(`kolo serve --show-key` prints it again). Jobs run the same trainer as `kolo train`, with --runtime docker "
    "(in the kolo container) or --runtime local.\n\n"
    "Example: kolo serve --port 8000"
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _size(text: str) -> int:
    """``2G``, ``512M``, ``1000000`` -> bytes (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, KeyError):
        raise OptionsError([f"--max-upload {text!r}: give a size such as 2G, 512M or a number of bytes"]) from None


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (another than loopback needs the key "
                                                          "to exist: start once on 127.0.0.1 first)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Jobs that run at the same time (one per GPU)."),
    max_upload: str = typer.Option("2G", "--max-upload", help="Largest dataset upload (e.g. 2G, 500M)."),
    show_key: bool = typer.Option(False, "--show-key", help="Print the API key and exit."),
) -> None:
    """Run the Training Manager (API + worker + dashboard). Example: kolo serve --port 8000"""
    from ..server.app import ServerConfig, create_key, read_key

    root = STATE.data()
    cfg = ServerConfig(data_root=root.path, runtime=STATE.runtime, container=STATE.container, workers=workers,
                       max_upload=_size(max_upload), debug=STATE.debug)
    key = read_key(cfg)
    if show_key:
        if key is None:
            raise KoloError(f"no API key yet under {root.display}", hint="start `kolo serve` once; it creates one")
        print(key)
        return
    if key is None:
        if not _loopback(host):
            raise OptionsError([f"--host {host}: refusing to listen beyond this machine before an API key exists"],
                               hint="start `kolo serve` once on 127.0.0.1 (it creates and prints the key), then "
                                    "bind to other addresses")
        root.path.mkdir(parents=True, exist_ok=True)  # a new user's first command may be this one
        root.check(writable=True)
        key = create_key(cfg)
        print(f"API key (shown once; `kolo serve --show-key` prints it again; stored in {cfg.key_path}):\n{key}",
              flush=True)
    _run(cfg, key, host, port)


def _run(cfg: object, key: str, host: str, port: int) -> None:
    import uvicorn

    from ..server.app import create_app

    app = create_app(cfg, key)  # type: ignore[arg-type]
    print(f"kolo serve: http://{host}:{port}/ (API docs at /docs, runtime {STATE.runtime}, data root "
          f"{STATE.data().display})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP, rich_help_panel="Training Manager")(serve)
