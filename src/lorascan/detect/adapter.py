"""A PEFT LoRA adapter folder as the weight detector sees it: files, config, module inventory.

- :func:`locate` finds ``adapter_model.safetensors`` and ``adapter_config.json``; a folder with
  only pickle weights (:data:`PICKLE_NAMES`) is refused, never unpickled.
- :func:`read_config` takes rank, alpha, rsLoRA and the base model from the config;
  :func:`read_base_fingerprint` the base model's shape from lorascan's ``lorascan.json``.
  Both files are read with a size cap (:mod:`lorascan.detect.jsonfile`).
- :func:`inventory` pairs LoRA A/B tensors by module across PEFT naming variants
  (``lora_A``/``lora_B`` with or without an adapter-name segment, ``lora_down``/``lora_up``,
  ``lora.down``/``lora.up``, ``lora_embedding_A``/``_B``), reads each module's rank from its
  tensors and checks it against the config. Tensors it cannot pair are returned as
  :class:`Unanalysed` entries, never dropped. Keys are parsed by splitting on dots: nothing
  from the file is compiled as a regular expression.

Deviation from PEFT: ``rank_pattern``/``alpha_pattern`` keys are regular expressions in PEFT;
compiling attacker-supplied patterns is unsafe, so a key applies when it equals the module path
or a dot-separated suffix of it. When a key uses regex syntax we cannot match literally, a
module's rank is accepted if it equals ``r`` or any ``rank_pattern`` value, and its alpha is
``lora_alpha`` (this only matters with ``scaling="alpha"``; the paper's features are unscaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.detect.jsonfile import read_json_untrusted
from lorascan.detect.safetensors_reader import TensorInfo
from lorascan.errors import DataError
from lorascan.safetensors_header import PICKLE_NAMES

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
MANIFEST_FILE = "lorascan.json"
# Pickle weight files an adapter folder may hold instead of safetensors: refused, never
# unpickled. One list for every reader (models/loading.py keeps its own copy for now).

ROLES = {"lora_A": "A", "lora_down": "A", "lora_embedding_A": "A",
         "lora_B": "B", "lora_up": "B", "lora_embedding_B": "B"}
ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "c_attn",
                       "Wqkv", "out_proj", "query", "key", "value", "wq", "wk", "wv", "wo"})
MLP = frozenset({"gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "w1", "w2", "w3",
                 "c_fc", "dense_h_to_4h", "dense_4h_to_h"})
EMBEDDINGS = frozenset({"embed_tokens", "wte", "word_embeddings", "tok_embeddings"})
LAYER_WORDS = frozenset({"layers", "layer", "h", "blocks", "block"})
_STRIP_PREFIXES = ("base_model.model.",)
_REGEX_CHARS = set("\\^$*+?()[]{}|")


@dataclass(frozen=True)
class AdapterFiles:
    folder: Path
    weights: Path
    config: Path


@dataclass(frozen=True)
class LoraConfig:
    """What the scan needs from ``adapter_config.json`` (PEFT defaults where a key is absent)."""

    r: int
    lora_alpha: float
    use_rslora: bool
    base_model: str | None
    rank_pattern: tuple[tuple[str, int], ...] = ()
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    use_dora: bool = False

    def rank_for(self, module: str) -> tuple[int, ...]:
        """Ranks the config allows for ``module`` (one unless a pattern is not literal)."""
        hit = _pattern_value(self.rank_pattern, module)
        if hit is not None:
            return (int(hit),)
        if any(set(k) & _REGEX_CHARS for k, _ in self.rank_pattern):
            return tuple(sorted({self.r, *(v for _, v in self.rank_pattern)}))
        return (self.r,)

    def scale_for(self, module: str, rank: int) -> float:
        """PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        hit = _pattern_value(self.alpha_pattern, module)
        alpha = float(hit) if hit is not None else self.lora_alpha
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_value(pattern: tuple[tuple[str, Any], ...], module: str) -> Any:
    for key, value in pattern:
        if module == key or module.endswith("." + key):
            return value
    return None


@dataclass(frozen=True)
class ModulePair:
    """One LoRA module: its A (r x in) and B (out x r) tensors and where it sits."""

    name: str
    layer: int | None
    projection: str
    kind: str  # "attention" | "mlp" | "embedding" | "other"
    a: TensorInfo
    b: TensorInfo

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    @property
    def out_features(self) -> int:
        return self.b.shape[0]


@dataclass(frozen=True)
class Unanalysed:
    """A tensor the scan did not analyse, and why. ``lora`` marks tensors of LoRA modules."""

    tensor: str
    reason: str
    lora: bool

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "reason": self.reason, "lora": self.lora}


def locate(adapter: str | Path) -> AdapterFiles:
    """The weights and config of an adapter folder (or of the folder of a .safetensors file)."""
    path = Path(adapter)
    if path.is_file() and path.suffix == ".safetensors":
        folder, weights = path.parent, path
    elif path.is_dir():
        folder, weights = path, path / WEIGHTS_FILE
    elif path.exists():
        raise DataError(f"{path}: expected an adapter folder or a .safetensors file")
    else:
        raise DataError(f"adapter not found: {path}")
    if not weights.exists():
        pickles = [p for p in PICKLE_NAMES if (folder / p).exists()]
        if pickles:
            raise DataError(f"{folder}: only {pickles[0]} present; pickle files are never unpickled "
                            f"(convert the adapter to {WEIGHTS_FILE} with a tool you trust)")
        raise DataError(f"{folder}: no {WEIGHTS_FILE}")
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise DataError(f"{folder}: {CONFIG_FILE} is missing; it is needed to check the rank and read alpha")
    return AdapterFiles(folder, weights, config)


def _number(cfg: dict[str, Any], key: str, default: Any, kind: type, where: str) -> Any:
    """``cfg[key]`` checked to be a ``kind`` (int, float or bool); ``default`` when absent or null."""
    value = cfg.get(key)
    if value is None:
        return default
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise DataError(f"{where}: '{key}' must be {'a number' if kind is float else kind.__name__}, "
                        f"got {str(value)[:40]!r}")
    return float(value) if kind is float else value


def _pattern(cfg: dict[str, Any], key: str, kind: type, where: str) -> tuple[tuple[str, Any], ...]:
    raw = cfg.get(key) or {}
    if not isinstance(raw, dict):
        raise DataError(f"{where}: '{key}' must be an object")
    out = []
    for name, value in raw.items():
        good = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if not good or (kind is int and not isinstance(value, int)):
            raise DataError(f"{where}: '{key}' entry {name[:60]!r} must be a positive {kind.__name__}")
        out.append((name, kind(value)))
    return tuple(out)


def read_config(path: Path) -> LoraConfig:
    """Parse and check ``adapter_config.json`` (DataError on anything malformed)."""
    where = str(path)
    cfg = read_json_untrusted(path, "adapter config")
    if not isinstance(cfg, dict):
        raise DataError(f"{where}: expected a JSON object")
    peft_type = cfg.get("peft_type", "LORA")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise DataError(f"{where}: peft_type {str(peft_type)[:40]!r} is not LORA; only LoRA adapters are scanned")
    if "r" not in cfg:
        raise DataError(f"{where}: no rank 'r'")
    r = _number(cfg, "r", None, int, where)
    if r <= 0:
        raise DataError(f"{where}: 'r' must be positive, got {r}")
    base = cfg.get("base_model_name_or_path")
    return LoraConfig(
        r=r, lora_alpha=_number(cfg, "lora_alpha", 8.0, float, where),
        use_rslora=_number(cfg, "use_rslora", False, bool, where),
        base_model=base if isinstance(base, str) else None,
        rank_pattern=_pattern(cfg, "rank_pattern", int, where),
        alpha_pattern=_pattern(cfg, "alpha_pattern", float, where),
        use_dora=_number(cfg, "use_dora", False, bool, where))


def read_base_fingerprint(folder: str | Path) -> dict[str, Any] | None:
    """The ``base_fingerprint`` (model_type, hidden_size, num_hidden_layers, ...) that lorascan's
    trainer records in ``lorascan.json`` beside an adapter; None when the folder has no
    lorascan.json or it records none. A malformed file or fingerprint is a DataError."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    rec = read_json_untrusted(path, "adapter manifest")
    fp = rec.get("base_fingerprint") if isinstance(rec, dict) else None
    if fp is None:
        return None
    return check_fingerprint(fp, str(path))


def check_fingerprint(fp: Any, where: str) -> dict[str, Any]:
    """A base fingerprint checked to be a small object of scalars, keys sorted."""
    scalar = (str, int, float, bool)
    if not isinstance(fp, dict) or len(fp) > 64 or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, scalar) and len(str(v)) <= 200
            for k, v in fp.items()):
        raise DataError(f"{where}: base_fingerprint must be an object of at most 64 scalar fields")
    return dict(sorted(fp.items()))


def parse_key(key: str) -> tuple[str, str | None, str] | None:
    """``(module path, adapter name or None, "A"|"B")`` of a LoRA key, or None for other tensors."""
    parts = key.split(".")
    if parts[-1] == "bias":  # PEFT's lora_bias: not part of B·A
        return None
    if len(parts) > 1 and parts[-1] == "weight":
        parts = parts[:-1]
    if len(parts) >= 3 and parts[-2] == "lora" and parts[-1] in ("down", "up"):
        return ".".join(parts[:-2]), None, "A" if parts[-1] == "down" else "B"
    adapter = None
    if len(parts) >= 3 and parts[-1] not in ROLES and parts[-2] in ROLES:
        adapter, parts = parts[-1], parts[:-1]
    if len(parts) >= 2 and parts[-1] in ROLES and all(parts[:-1]):
        base = ".".join(parts[:-1])
        for prefix in _STRIP_PREFIXES:
            if base.startswith(prefix) and len(base) > len(prefix):
                base = base[len(prefix):]
        return base, adapter, ROLES[parts[-1]]
    return None


def _kind(names: list[str]) -> str:
    """"attention", "mlp", "embedding" or "other", from the enclosing blocks, then the name."""
    projection = names[-1]
    if projection in EMBEDDINGS:
        return "embedding"
    context = ".".join(names[:-1]).lower()
    if "attn" in context or "attention" in context:
        return "attention"
    if any(w in context for w in ("mlp", "ffn", "feed_forward", "intermediate")) or names[-2:] == ["output", "dense"]:
        return "mlp"
    if projection in ATTENTION:
        return "attention"
    return "mlp" if projection in MLP else "other"


def locate_module(base: str) -> tuple[int | None, str, str]:
    """Layer index, projection name and kind of a module path."""
    parts = base.split(".")
    layer = None
    for word, nxt in zip(parts, parts[1:]):
        if word in LAYER_WORDS and nxt.isascii() and nxt.isdigit() and len(nxt) <= 9:
            layer = int(nxt)
            break
    names = [p for p in parts if not (p.isascii() and p.isdigit())] or [base]
    return layer, names[-1], _kind(names)


def _check_pair(name: str, a: TensorInfo, b: TensorInfo, cfg: LoraConfig) -> None:
    if len(a.shape) < 2 or len(b.shape) < 2 or any(d != 1 for d in b.shape[2:]):
        raise DataError(f"module {name[:160]!r}: lora_A shape {list(a.shape)} / lora_B shape {list(b.shape)} "
                        "are not (r, in) and (out, r)")
    if 0 in a.shape or 0 in b.shape:
        raise DataError(f"module {name[:160]!r}: empty lora_A {list(a.shape)} or lora_B {list(b.shape)}")
    if a.shape[0] != b.shape[1]:
        raise DataError(f"module {name[:160]!r}: A/B shape mismatch: lora_A {list(a.shape)} has rank "
                        f"{a.shape[0]} but lora_B {list(b.shape)} has {b.shape[1]}")
    allowed = cfg.rank_for(name)
    if a.shape[0] not in allowed:
        want = allowed[0] if len(allowed) == 1 else list(allowed)
        raise DataError(f"module {name[:160]!r}: rank {a.shape[0]} in the tensors differs from the config (r = {want})")


def inventory(tensors: dict[str, TensorInfo], cfg: LoraConfig) -> tuple[list[ModulePair], list[Unanalysed]]:
    """Pair A/B tensors by module; shape and rank errors are DataErrors, the rest is reported."""
    groups: dict[tuple[str, str | None], dict[str, TensorInfo]] = {}
    skipped: list[Unanalysed] = []
    for key, info in tensors.items():
        parsed = parse_key(key)
        if parsed is None:
            dora = "lora_magnitude_vector" in key  # part of a DoRA update, which B·A alone does not describe
            what = "DoRA magnitude vector" if dora else "not a LoRA A/B tensor (e.g. modules_to_save)"
            skipped.append(Unanalysed(key, what, lora=dora))
            continue
        base, adapter, role = parsed
        slot = groups.setdefault((base, adapter), {})
        if role in slot:
            raise DataError(f"module {base[:160]!r} has two lora_{role} tensors: "
                            f"{slot[role].name[:120]!r} and {key[:120]!r}")
        slot[role] = info
    pairs: list[ModulePair] = []
    for (base, adapter), slot in groups.items():
        name = base if adapter is None else f"{base}[{adapter}]"
        if len(slot) < 2:
            (role, info), = slot.items()
            other = "B" if role == "A" else "A"
            skipped.append(Unanalysed(info.name, f"lora_{role} without its lora_{other}", lora=True))
            continue
        _check_pair(name, slot["A"], slot["B"], cfg)
        layer, projection, kind = locate_module(base)
        pairs.append(ModulePair(name, layer, projection, kind, slot["A"], slot["B"]))
    pairs.sort(key=lambda p: min(p.a.start, p.b.start))  # file order: sequential reads
    return pairs, skipped
