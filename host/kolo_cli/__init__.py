"""kolo_cli: the host half of kolo (the `kolo` command)."""

__version__ = "0.1.0"
