"""The one cache folder lorascan writes to outside the paths a user names.

``LORASCAN_HOME`` (default ``~/.cache/lorascan``) holds converted models (``models/``: e.g. the
packaged SmolLM2 GGUF turned into an HF folder), converted tokenizers (``tokenizers/``) and
cached probe records (``probes/``, keyed by the adapter, data and battery hashes) and nothing
else; it is safe to delete.
"""

from __future__ import annotations

import os
from pathlib import Path


def lorascan_home() -> Path:
    """The cache folder: ``$LORASCAN_HOME`` or ``~/.cache/lorascan``."""
    env = os.environ.get("LORASCAN_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lorascan"
