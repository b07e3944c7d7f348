"""Runs one argv through a kolo transport, as `kolo train` does, for the tests.

Usage: python transport_driver.py RUNTIME CONTAINER DATA_ROOT -- ARGV...
Used by the Docker suite and the local-transport unit tests. ARGV replaces ``python -m kolo_trainer ...`` so a
test can run a controllable process (one that streams, exits with a chosen code, or runs until interrupted)
through the real transport code: the docker CLI, the run marker, the stop exec, the renderer and the exit-code
path are all the real ones. Errors are reported by the same handler `kolo` uses.
"""

import sys

from kolo_cli.cli import report
from kolo_cli.render import PlainRenderer
from kolo_cli.transport import make_transport
from kolo_trainer.errors import KoloError

runtime, container, data_root, sep, *argv = sys.argv[1:]
assert sep == "--"
transport = make_transport(runtime, container, data_root)
try:
    sys.exit(transport.run(argv, PlainRenderer()))
except KoloError as e:
    report(e)
    sys.exit(e.exit_code)
