"""kolo_trainer: the half of kolo that runs inside the container (or locally with ``--runtime local``).

The light modules (``spec``, ``options``, ``names``, ``errors``, ``data``, ``templates``) use only the standard
library, pydantic and PyYAML, so the host CLI can share them. Everything that needs torch, transformers, peft or
llama-cpp-python imports it inside the function that needs it.
"""

__version__ = "0.1.0"
