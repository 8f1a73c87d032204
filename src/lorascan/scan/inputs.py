"""What ``lorascan scan`` is given, turned into local adapter folders, and the base it is judged on.

Inputs (:func:`expand`): a PEFT folder; a folder of adapter folders or a list file (one entry a
line, ``#`` comments) for a batch; a hub id ``ORG/NAME[@REVISION]``, of which only
``adapter_config.json`` and ``adapter_model.safetensors`` are fetched (:func:`fetch_hub`, with
huggingface_hub; the commit it resolved to goes into the record).

The base (:func:`resolve_scan_base`) is decided as data, never by a path the adapter names:
``--base`` when given; else ``base_model_name_or_path`` of adapter_config.json matched against
the packaged bases (their hub ids, their alias, or their package-relative install path, which
is what adapters lorascan trained record). A local path or an unknown hub id named by the
adapter is refused with a one-line error that names ``--base``: loading it would let the
adapter pick the model it is judged on, or make a scan download what the adapter asks for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lorascan.errors import DataError, UsageError
from lorascan.models.loading import ALIASES, resolve_base
from lorascan.models import tiny
from lorascan.text import short_repr

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
MAX_LIST_BYTES = 1024 * 1024
MAX_BATCH = 10_000
_HUB = re.compile(r"^([A-Za-z0-9][\w.-]{0,95})/([\w.-]{1,96})(?:@([\w./-]{1,128}))?\Z")
# Hub ids of the packaged bases (lower case): an adapter trained on the hub model fits the
# packaged copy of the same weights.
KNOWN_HUB_IDS = {"sentence-transformers/all-minilm-l6-v2": "minilm",
                 "huggingfacetb/smollm2-135m-instruct": "smollm2-135m"}
# What a packaged base's install path ends with (lorascan-trained adapters record that path).
_ALIAS_SUFFIXES = {f"{pkg}/{rel}".lower(): alias for alias, (_, pkg, rel) in ALIASES.items()}


@dataclass(frozen=True)
class AdapterInput:
    """One adapter to scan: ``spec`` as given, ``folder`` where its files are on disk."""

    spec: str
    folder: Path
    source: str = "folder"  # folder | hub
    hub: dict[str, Any] | None = None  # {"id", "revision", "commit"} for hub inputs

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "path": str(self.folder), "source": self.source, "hub": self.hub}


def is_adapter_folder(path: Path) -> bool:
    return (path / CONFIG).is_file() or (path / WEIGHTS).is_file() or (path / "adapter_model.bin").is_file()


def parse_hub(spec: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``spec`` is a hub id and not an existing local path."""
    m = _HUB.match(spec)
    if not m or os.path.exists(spec) or spec.startswith((".", "~")):
        return None
    return f"{m.group(1)}/{m.group(2)}", m.group(3)


def _list_file(path: Path) -> list[str]:
    from lorascan.bounded import read_text

    lines = read_text(path, "list file", MAX_LIST_BYTES).splitlines()
    out = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            p = Path(entry).expanduser()
            out.append(str(p if p.is_absolute() or parse_hub(entry) else path.parent / p))
    return out


def expand(specs: Sequence[str]) -> tuple[list[str], bool]:
    """The adapter entries of ``specs`` and whether this is a batch (a folder of adapters, a
    list file or several specs). Entries are not checked here: a missing one fails on its own
    in a batch, so the rest is still scanned."""
    entries: list[str] = []
    batch = len(specs) > 1
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir() and not is_adapter_folder(path):
            subs = sorted(str(p) for p in path.iterdir() if p.is_dir() and is_adapter_folder(p))
            if not subs:
                raise DataError(f"{path} is neither an adapter folder (no {CONFIG}) nor a folder of adapter folders")
            entries += subs
            batch = True
        elif path.is_file() and path.suffix.lower() in (".txt", ".list", ".lst"):
            entries += _list_file(path)
            batch = True
        else:
            entries.append(spec)
        if len(entries) > MAX_BATCH:
            raise UsageError(f"more than {MAX_BATCH} adapters in one batch; split the list")
    if not entries:
        raise UsageError("nothing to scan: no adapter given")
    return entries, batch


def fetch_hub(repo_id: str, revision: str | None, cache_dir: str | None = None) -> AdapterInput:
    """Download only the two adapter files of a hub repo. Offline or unknown: one DataError,
    fast (no retries), nothing left partial (huggingface_hub writes into its cache atomically)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DataError("scanning a hub id needs huggingface_hub (pip install huggingface_hub)") from None
    paths = {}
    for name in (CONFIG, WEIGHTS):
        try:
            paths[name] = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                               etag_timeout=5))
        except Exception as err:  # noqa: BLE001 - offline, 404, auth: all one line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise DataError(f"cannot fetch {name} of hub adapter {repo_id}@{revision or 'main'} "
                            f"({type(err).__name__}: {first}); scan a local copy instead") from None
    folder = paths[CONFIG].parent
    if paths[WEIGHTS].parent != folder:
        raise DataError(f"hub adapter {repo_id}: the two files resolved to different revisions")
    commit = folder.name if re.fullmatch(r"[0-9a-f]{40}", folder.name) else None
    return AdapterInput(f"{repo_id}@{revision}" if revision else repo_id, folder, "hub",
                        {"id": repo_id, "revision": revision, "commit": commit})


def resolve_input(spec: str, cache_dir: str | None = None) -> AdapterInput:
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{spec}: expected an adapter folder, a folder of adapters, a list file or a hub id")
        return AdapterInput(spec, path)
    hub = parse_hub(spec)
    if hub is None:
        raise DataError(f"adapter not found: {short_repr(spec)} (not a folder, and not a hub id ORG/NAME[@REVISION])")
    return fetch_hub(hub[0], hub[1], cache_dir)


def canonical_base(name: str) -> str:
    """An alias for a base given as the packaged model's own path (so its profile applies)."""
    if name in ALIASES or name in tiny.TINY_NAMES:
        return name
    key = name.replace("\\", "/").rstrip("/").lower()
    for suffix, alias in _ALIAS_SUFFIXES.items():
        if key.endswith("/" + suffix) or key == suffix:
            try:
                if Path(resolve_base(alias).location).resolve() == Path(name).expanduser().resolve():
                    return alias
            except Exception:  # noqa: BLE001 - the package is not installed: keep the name
                return name
    return KNOWN_HUB_IDS.get(key, name)


def resolve_scan_base(cfg: dict[str, Any], override: str | None) -> tuple[str, str]:
    """``(base, source)`` for an adapter whose config is ``cfg`` (module docstring)."""
    if override:
        resolve_base(override)  # unknown names fail here, one line
        return canonical_base(override), "--base"
    declared = cfg.get("base_model_name_or_path")
    if not isinstance(declared, str) or not declared.strip():
        raise UsageError("adapter_config.json names no base model (base_model_name_or_path); pass --base")
    key = declared.replace("\\", "/").rstrip("/").lower()
    if declared in ALIASES or declared in tiny.TINY_NAMES:
        return declared, f"adapter_config.json names the packaged base '{declared}'"
    if key in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[key], f"adapter_config.json names {short_repr(declared)}, the packaged '{KNOWN_HUB_IDS[key]}'"
    for suffix, alias in _ALIAS_SUFFIXES.items():
        if key.endswith("/" + suffix):
            return alias, f"adapter_config.json names the install path of the packaged '{alias}' (matched as data)"
    if parse_hub(declared) is not None and "/" in declared and not declared.startswith("/"):
        raise UsageError(f"adapter_config.json names base {short_repr(declared)}, which is not a packaged base; "
                         f"a scan does not download what an adapter names: pass --base {short_repr(declared)} "
                         "to use it")
    raise UsageError(f"adapter_config.json names base {short_repr(declared)}, a local path or unknown name; a scan "
                     "never loads a model from a path an adapter names: pass --base")
