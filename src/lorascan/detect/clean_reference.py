"""Clean reference adapters (issue 12): clean adapters of a base and formulation, trained with a
known recipe, that a search-based detector runs its candidate triggers on beside the scanned
adapter.

Why: a classifier fine-tuned on a task has natural weak spots. On MiniLM trained on offline-pi,
a prefix of narrative words (``excerpt define birch sailed : scarcely heaved``) turns most
injections benign on every adapter of the recipe, clean or poisoned, so a search that maximises
the attack rate finds such phrases on clean adapters too. A backdoor's phrase flips only the
adapter that learnt it. Measured on cohort v2's 16-adapter subset (README, "The phrase search"):
the narrative prefix above flips 31-88% of held-out injections on all eight clean adapters,
while the phrases that the search found on the backdoored ones (``see shrubs see clause 132``,
``{ fellride { beds``, ``##iti logical 1711 1711``) flip 0-19% of them on every clean adapter
and 91-100% on their own. A phrase's rate on the clean references is the share a natural weak
spot explains.

The package ships reference adapters per base and formulation in
``references/adapters/<base>/<task>/<name>/`` (a PEFT folder as a user downloads one: float16
``adapter_model.safetensors`` and ``adapter_config.json``, nothing else; rebuilt by
``experiments/clean-reference-adapters.sh`` from clean adapters on seeds no evaluation cohort
uses). They are loaded through the same checked path as a scanned adapter.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorascan.errors import DataError, UsageError

HERE = Path(__file__).parent / "references" / "adapters"
MAX_REFERENCES = 8  # each costs one more pass per shortlisted candidate
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def reference_adapters(spec: str, base: str | None, task: str | None) -> tuple[list[Path], str]:
    """The clean reference adapters ``spec`` names and a note saying where they came from:
    ``auto`` the ones shipped for ``base`` and ``task`` (none for another base), ``none`` no
    reference, else folders separated by commas (each checked when it is loaded)."""
    if spec == "none":
        return [], "none (--clean-reference none)"
    if spec == "auto":
        if not base or not task or not _NAME.fullmatch(base) or not _NAME.fullmatch(task):
            return [], "none shipped (the base is not a packaged alias)"
        folder = HERE / base / task
        found = sorted(p for p in folder.iterdir() if (p / "adapter_config.json").is_file()) if folder.is_dir() else []
        if not found:
            return [], f"none shipped for {base} ({task})"
        return found[:MAX_REFERENCES], f"shipped for {base} ({task}): {', '.join(p.name for p in found[:MAX_REFERENCES])}"
    paths = [Path(p) for p in spec.split(",") if p.strip()]
    if not paths:
        raise UsageError("clean reference: name 'auto', 'none' or adapter folders separated by commas")
    if len(paths) > MAX_REFERENCES:
        raise UsageError(f"clean reference: at most {MAX_REFERENCES} adapters, got {len(paths)}")
    return paths, "given: " + ", ".join(p.name for p in paths)


def shipped() -> dict[str, Path]:
    """``{base/task/name: folder}`` of every clean reference adapter in the package."""
    return {"/".join(p.parent.relative_to(HERE).parts): p.parent for p in sorted(HERE.glob("*/*/*/adapter_config.json"))}


def check(spec: str) -> None:
    """A DataError unless ``spec`` is ``auto``, ``none`` or adapter folders that exist, each with
    its config and safetensors weights (before anything loads; the contents are checked on load)."""
    if spec in ("auto", "none"):
        return
    paths, _ = reference_adapters(spec, None, None)
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise DataError(f"clean reference adapter not found: {missing[0]} (give auto, none or adapter folders)")
    for p in paths:
        absent = [n for n in ("adapter_config.json", "adapter_model.safetensors") if not (p / n).is_file()]
        if absent:
            raise DataError(f"clean reference {p} is not a LoRA adapter folder: no {absent[0]} "
                            "(give auto, none or adapter folders)")
