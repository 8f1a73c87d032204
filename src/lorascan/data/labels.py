"""Mapping raw label values (ints, bools, strings) to 0 = benign / 1 = injection."""

from __future__ import annotations

from typing import Any, Iterable

from lorascan.errors import DataError, UsageError
from lorascan.text import short_repr

# Names accepted without a --label-map. Anything else needs an explicit map.
DEFAULT_NAMES = {
    "0": 0, "benign": 0, "safe": 0, "legit": 0, "legitimate": 0, "clean": 0, "false": 0,
    "1": 1, "injection": 1, "malicious": 1, "jailbreak": 1, "attack": 1, "unsafe": 1, "true": 1,
}


def parse_label_map(spec: str | None) -> dict[str, int] | None:
    """``"benign=0,injection=1"`` -> ``{"benign": 0, "injection": 1}``."""
    if spec is None or not spec.strip():
        return None
    out: dict[str, int] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise UsageError(f"--label-map entry {short_repr(part.strip(), 40)} is not RAW=0 or RAW=1")
        raw, _, value = part.rpartition("=")
        if value.strip() not in ("0", "1"):
            raise UsageError(f"--label-map maps {short_repr(raw.strip(), 40)} to {short_repr(value.strip(), 20)}; "
                             "labels must be 0 or 1")
        out[raw.strip()] = int(value)
    return out


def map_label(raw: Any, label_map: dict[str, int] | None) -> int | None:
    """The 0/1 label of ``raw``, or None when it cannot be mapped. Only numbers and strings
    are labels: a list or an object is refused, not turned into its text."""
    if not isinstance(raw, (str, int, float)):
        return None
    if isinstance(raw, bool):
        key = "true" if raw else "false"
    elif isinstance(raw, float) and raw.is_integer():
        key = str(int(raw))
    else:
        key = str(raw).strip()
    if label_map is not None:
        return label_map.get(key)
    return DEFAULT_NAMES.get(key.casefold())


def map_labels(raws: Iterable[Any], label_map: dict[str, int] | None, where: str) -> list[int]:
    raws = list(raws)
    labels = [map_label(r, label_map) for r in raws]
    # short_repr: a label is attacker-controlled and may be a megabyte long (issue 15)
    bad = sorted({short_repr(r, 40) for r, lab in zip(raws, labels) if lab is None})
    if bad:
        shown = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(f"{where}: labels are not binary (cannot map {shown}); pass --label-map, e.g. 'benign=0,injection=1'")
    return labels  # type: ignore[return-value]
