"""Validate the files of an untrusted PEFT adapter folder before anything loads it.

- ``adapter_config.json`` and ``lorascan.json``: read with a size cap, parsed only as data, and
  type-checked once here, so code further on can index them without guarding every access.
- ``adapter_model.safetensors``: its header and layout validated
  (:mod:`lorascan.safetensors_header`) before peft and the safetensors library open it.
- The LoRA config handed to peft is rebuilt from a checked copy: peft compiles a string
  ``target_modules``/``exclude_modules``, ``layers_pattern``, ``modules_to_save`` entries and the
  keys of ``rank_pattern``/``alpha_pattern`` as regular expressions, so a crafted config could
  stall the process (catastrophic backtracking); lorascan accepts only plain module names
  there. Options that run code or read files at load time (data-driven initialisations such
  as LoftQ/EVA/CorDA, megatron) are refused unless they hold peft's default.

Any problem is a one-line :class:`~lorascan.errors.DataError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from lorascan.errors import DataError
from lorascan.formulations import task_names
from lorascan.records import read_json
from lorascan.safetensors_header import PICKLE_NAMES, validate_file

WEIGHTS = "adapter_model.safetensors"
MAX_ADAPTER_JSON_BYTES = 4 * 1024 * 1024  # real adapter_config.json / lorascan.json files are a few kB
# A module name as peft matches it: no regex operators (a '.' matches any one character, which
# cannot backtrack), bounded length.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
# adapter_config.json keys passed on to peft (after the checks below); the rest must hold peft's
# default, except bookkeeping keys that do not change the loaded adapter.
PASSED = ("task_type", "peft_type", "base_model_name_or_path", "revision", "r", "target_modules", "exclude_modules",
          "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "modules_to_save",
          "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "use_dora", "lora_bias",
          "target_parameters", "ensure_weight_tying", "trainable_token_indices")
# init_lora_weights only decides how fresh weights start, and every weight is then loaded from
# the file; it is dropped so no data-driven initialisation (SVD of the base, files) runs.
DROPPED = ("auto_mapping", "peft_version", "inference_mode", "init_lora_weights", "runtime_config")


def check_adapter_folder(adapter_dir: str | Path) -> dict[str, Any]:
    """Validate an adapter folder before anything loads it; returns adapter_config.json."""
    folder = Path(adapter_dir)
    try:
        if not folder.is_dir():
            raise DataError(f"adapter folder not found: {folder}")
        if not (folder / WEIGHTS).is_file():
            if any((folder / n).exists() for n in PICKLE_NAMES):
                raise DataError(f"{folder} holds only a pickle adapter (adapter_model.bin); lorascan never unpickles "
                                "untrusted files: convert it to adapter_model.safetensors in a trusted environment")
            raise DataError(f"{folder} has no {WEIGHTS}")
        if not (folder / "adapter_config.json").exists():
            raise DataError(f"{folder} has no adapter_config.json")
    except OSError as err:
        raise DataError(f"cannot read adapter folder {folder}: {err.strerror or err}") from None
    cfg = read_json(folder / "adapter_config.json", "adapter config", MAX_ADAPTER_JSON_BYTES)
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise DataError(f"{folder}/adapter_config.json is not a LoRA adapter config")
    validate_file(folder / WEIGHTS)
    return cfg


def _fail(path: Path, field: str, want: str, value: Any) -> DataError:
    return DataError(f"{path}: field '{field}' must be {want}, got {type(value).__name__} {str(value)[:80]!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_adapter_meta(adapter_dir: str | Path) -> dict[str, Any]:
    """lorascan.json beside the adapter, or {} when the adapter came from elsewhere. The fields
    lorascan reads are type-checked here (null counts as absent): ``base`` a string, ``task``
    label-word or seq-cls, ``config``/``data``/``base_fingerprint``/``poison`` objects,
    ``config.max_length`` an integer >= 1, ``data.path``/``data.manifest_sha256`` strings."""
    path = Path(adapter_dir) / "lorascan.json"
    try:
        if not path.is_file():
            return {}
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    meta = read_json(path, "adapter metadata", MAX_ADAPTER_JSON_BYTES)
    if not isinstance(meta, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    for field, tp, want in (("base", str, "a string"), ("task", str, "a string"), ("config", dict, "an object"),
                            ("data", dict, "an object"), ("base_fingerprint", dict, "an object"),
                            ("poison", dict, "an object")):
        value = meta.get(field)
        if value is not None and not isinstance(value, tp):
            raise _fail(path, field, want, value)
    tasks = task_names()
    if meta.get("task") is not None and meta["task"] not in tasks:
        raise _fail(path, "task", " or ".join(tasks), meta["task"])
    max_length = (meta.get("config") or {}).get("max_length")
    if max_length is not None and not (_is_int(max_length) and max_length >= 1):
        raise _fail(path, "config.max_length", "an integer >= 1", max_length)
    for key in ("path", "manifest_sha256"):
        value = (meta.get("data") or {}).get(key)
        if value is not None and not isinstance(value, str):
            raise _fail(path, f"data.{key}", "a string", value)
    return meta


def _names(value: Any, field: str, where: Path, allow_str: bool) -> None:
    """``value`` is None, a list of plain module names, or (``allow_str``) one plain name."""
    if value is None:
        return
    items = [value] if allow_str and isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and PLAIN_NAME.fullmatch(v) for v in items):
        raise DataError(f"{where}: '{field}' must be plain module names (letters, digits, '_', '.', '-'), got "
                        f"{str(value)[:80]!r}; peft would compile it as a regular expression, which lorascan "
                        "does not allow from an untrusted adapter")


def _pattern(value: Any, field: str, where: Path) -> None:
    """``rank_pattern``/``alpha_pattern``: plain module names mapped to numbers."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise DataError(f"{where}: '{field}' must be an object, got {type(value).__name__}")
    _names(list(value), field, where, allow_str=False)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise DataError(f"{where}: '{field}' values must be numbers")


def lora_config(cfg: dict[str, Any], adapter_dir: str | Path):
    """A peft ``LoraConfig`` rebuilt from a checked ``adapter_config.json`` (module docstring)."""
    from peft import LoraConfig

    where = Path(adapter_dir) / "adapter_config.json"
    for field in ("target_modules", "exclude_modules", "layers_pattern"):
        _names(cfg.get(field), field, where, allow_str=True)
    for field in ("modules_to_save", "target_parameters"):
        _names(cfg.get(field), field, where, allow_str=False)
    for field in ("rank_pattern", "alpha_pattern"):
        _pattern(cfg.get(field), field, where)
    r, alpha, dropout = cfg.get("r", 8), cfg.get("lora_alpha", 8), cfg.get("lora_dropout", 0.0)
    if not (_is_int(r) and r >= 1):
        raise _fail(where, "r", "an integer >= 1", r)
    for field, value in (("lora_alpha", alpha), ("lora_dropout", dropout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise _fail(where, field, "a number", value)
    tokens = cfg.get("trainable_token_indices")
    if isinstance(tokens, dict):
        _names(list(tokens), "trainable_token_indices", where, allow_str=False)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(LoraConfig)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    for key, value in cfg.items():
        if key in PASSED or key in DROPPED:
            continue
        if value != defaults.get(key) and value not in (None, False, {}, []):
            raise DataError(f"{where}: option '{key}' = {str(value)[:60]!r} is not supported by lorascan "
                            "(plain LoRA adapters only)")
    kwargs = {k: v for k, v in cfg.items() if k in PASSED}
    kwargs["peft_type"] = "LORA"
    try:
        return LoraConfig.from_peft_type(**LoraConfig.check_kwargs(**kwargs))
    except Exception as err:  # noqa: BLE001 - peft raises TypeError/ValueError/... on bad values
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise DataError(f"{where} is not a valid LoRA config: {first}") from None
