"""Screening scorers of the token scan (issue 11): score every token of the vocabulary as a
trigger candidate without one forward pass per token. :mod:`lorascan.detect.tokens` verifies
the top of these rankings exactly.

- :func:`candidate_vocabulary`: the tokens worth trying, word-like and printable, each as the
  text the poisoning would place (``"{token}. {text}"``, :func:`lorascan.data.poison.apply_trigger`)
  and the id that text gets back from the tokenizer; label words and their sub-tokens are
  blocked for label-word adapters (classifier inversion is otherwise dominated by them).
- :func:`weight_scores` (weight-guided): the layer-0 LoRA update ΔW = W_merged - W_base of
  the modules that read the token embeddings (query/key/value, the MLP input), applied to the
  normalised input embeddings: ‖ΔW x_v‖ per token v. The adapter's first layer reads tokens
  through A, so the tokens it learned to look at stand out (issue 11's feasibility note:
  a trigger token in the top 15 of four MiniLM adapters). ΔW is taken to its rank-r factor by
  an SVD of a hidden-sized matrix, so the vocabulary is multiplied by r columns only.
- :func:`gradient_scores` (gradient-guided, first order, HotFlip): the gradient g of the
  injection margin with respect to the input embedding at the trigger position, averaged
  over a batch of injections; -e_v·g estimates how far token v placed there moves the
  margin towards benign. One backward pass scores the whole vocabulary.
- :func:`compound_candidates`: two-piece words built from the weight screen's outlier pieces
  (a word-start piece and a continuation piece), for trigger words the tokenizer splits.
- differential: for label-word adapters the same gradient score of the base model without
  the adapter is subtracted (the base reads label words too); a seq-cls base has a random
  head, so its gradients mean nothing and no base score is subtracted there.

Scores are combined by rank (:func:`interleave`), not by value: the scorers' scales differ,
and a heavy tail of one would otherwise crowd the other out of the verified top K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lorascan.data.poison import apply_trigger
from lorascan.detect.blas import torch_one_thread
from lorascan.errors import DataError
from lorascan.formulations import formulation_for

#: the placeholder the gradient is taken at (a common word in every tokenizer lorascan ships)
PLACEHOLDER = "the"
#: label words and synonyms a label-word adapter answers with (blocked, issue 11 "filters")
LABEL_SYNONYMS = ("INJECTION", "BENIGN", "injection", "benign", "Injection", "Benign", "safe", "harmless",
                  "malicious", "SAFE", "MALICIOUS")
MAX_TOKEN_CHARS = 40
_LAYER0 = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.0\.")
_ATTN_IN = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "Wqkv")
_MLP_IN = ("intermediate.dense", "up_proj", "gate_proj", "gate_up_proj", "fc1", "c_fc")
_SPECIAL = re.compile(r"^(\[[^\]]*\]|<[^>]*>|<\|.*\|>)$")


@dataclass(frozen=True)
class Vocabulary:
    """The candidate tokens: ``ids`` (the id each text gets back at the trigger position),
    ``texts`` (what is placed), ``size`` the model's vocabulary size, ``blocked`` how many
    otherwise word-like tokens the label-word blocklist removed; entries from ``n_single`` on
    (when set) are two-piece compounds (:func:`compound_candidates`), not vocabulary tokens."""

    ids: np.ndarray
    texts: tuple[str, ...]
    size: int
    blocked: int = 0
    n_single: int | None = None

    @property
    def singles(self) -> int:
        return len(self.ids) if self.n_single is None else self.n_single


def _word_like(raw: str, text: str) -> bool:
    return (0 < len(text) <= MAX_TOKEN_CHARS and text.isprintable() and not any(c.isspace() for c in text)
            and any(c.isalnum() for c in text) and not raw.startswith("##") and not _SPECIAL.match(text)
            and "\ufffd" not in text)


def label_blocklist(tokenizer, task: str) -> set[str]:
    """Lower-cased texts never tried on an adapter whose formulation answers in label words
    (label-word): the label words, their synonyms and every sub-token of them (with and
    without a leading space)."""
    label_words = formulation_for(task).label_words
    if not label_words:
        return set()
    words = (*label_words.values(), *LABEL_SYNONYMS)
    out = {w.lower() for w in words}
    for word in words:
        for form in (word, " " + word):
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            out.update(t.strip().lower() for t in tokenizer.batch_decode([[i] for i in ids]) if t.strip())
    return out


def candidate_vocabulary(tokenizer, vocab_size: int, task: str) -> Vocabulary:
    """Word-like, printable, non-special tokens whose text tokenizes back to one token; one
    entry per text. ``vocab_size``: rows of the model's input embedding."""
    n = len(tokenizer)
    if n > vocab_size:
        raise DataError(f"the tokenizer has {n} tokens but the model's input embedding only {vocab_size} rows; "
                        "the base does not match this adapter's vocabulary")
    special = set(tokenizer.all_special_ids or ())
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in range(n)])]
    keep = [i for i in range(n) if i not in special and raw[i] is not None and _word_like(raw[i], texts[i])]
    back = tokenizer([texts[i] for i in keep], add_special_tokens=False)["input_ids"]
    blocked = label_blocklist(tokenizer, task)
    ids, out, seen, n_blocked = [], [], set(), 0
    for i, ids_back in zip(keep, back):
        text = texts[i]
        if len(ids_back) != 1 or text in seen:
            continue
        seen.add(text)
        if text.lower() in blocked:
            n_blocked += 1
            continue
        ids.append(ids_back[0])
        out.append(text)
    if not ids:
        raise DataError("the tokenizer has no word-like tokens to try")
    return Vocabulary(np.asarray(ids, dtype=np.int64), tuple(out), vocab_size, n_blocked)


def _piece_kinds(raw: Sequence[str | None]) -> tuple[list[int], list[int]]:
    """(word-start ids, continuation ids) of a vocabulary, alphabetic pieces only: WordPiece
    marks continuations with ``##``; byte-level BPE (``Ġ``) and SentencePiece (``▁``) mark word
    starts instead, so there a piece without the mark continues a word."""
    marks = "Ġ▁"
    starts_marked = sum(1 for t in raw if t and t[0] in marks) > len(raw) // 10
    heads, tails = [], []
    for i, t in enumerate(raw):
        if not t:
            continue
        if t.startswith("##"):
            (tails if t[2:].isalpha() else []).append(i)
        elif starts_marked:
            if t[0] in marks and t[1:].isalpha():
                heads.append(i)
            elif t.isalpha():
                tails.append(i)
        elif t.isalpha():
            heads.append(i)
    return heads, tails


def compound_candidates(tokenizer, scores: np.ndarray, heads: int = 4, tails: int = 8,
                        blocked: frozenset[str] | set[str] = frozenset()) -> list[tuple[str, int, float]]:
    """Two-piece words from the weight screen's outliers: each of the ``heads`` best-scored
    word-start pieces followed by each of the ``tails`` best-scored continuation pieces, kept
    when the text tokenizes back to exactly those two pieces; (text, head id, screen z). A
    trigger word the tokenizer splits (``quasar`` = ``qu ##asa ##r``) is read by the adapter
    through its pieces, and the candidate vocabulary (one-token texts) cannot place it whole.
    ``blocked``: lower-cased texts never proposed (the label-word blocklist)."""
    n = min(len(tokenizer), len(scores))
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids or ())
    head_ids, tail_ids = _piece_kinds(raw)
    z = robust_z(np.asarray(scores[:n], dtype=np.float64))
    best_heads = sorted((i for i in head_ids if i not in special), key=lambda i: -z[i])[:heads]
    best_tails = sorted((i for i in tail_ids if i not in special), key=lambda i: -z[i])[:tails]
    out, seen = [], set()
    for h in best_heads:
        for t in best_tails:
            text = tokenizer.decode([h, t]).strip()
            if (not text or text in seen or not text.isprintable() or len(text) > MAX_TOKEN_CHARS
                    or text.lower() in blocked):
                continue
            if tokenizer(text, add_special_tokens=False)["input_ids"] == [h, t]:
                seen.add(text)
                out.append((text, int(h), float(max(z[h], z[t]))))
    return out


def with_compounds(tokenizer, vocab: Vocabulary, top: list[int], z: np.ndarray, scores: np.ndarray, n: int,
                   blocked: frozenset[str] | set[str] = frozenset()) -> tuple[Vocabulary, list[int], np.ndarray]:
    """``vocab``, ``top`` and ``z`` with up to ``n`` x ``2 n`` two-piece compounds of the weight
    screen's outliers (:func:`compound_candidates` over the full-vocabulary ``scores``) appended:
    texts the vocabulary already holds are skipped, and every compound joins the candidates to
    verify, like the screened tokens."""
    known = set(vocab.texts)
    extra = [c for c in compound_candidates(tokenizer, scores, n, 2 * n, blocked) if c[0] not in known]
    if not extra:
        return vocab, top, z
    start = len(vocab.ids)
    vocab = Vocabulary(np.concatenate([vocab.ids, [c[1] for c in extra]]).astype(np.int64),
                       vocab.texts + tuple(c[0] for c in extra), vocab.size, vocab.blocked, start)
    return vocab, top + list(range(start, start + len(extra))), np.concatenate([z, [c[2] for c in extra]])


def _inner(model):
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


def embedding_inputs(model) -> tuple[Any, Any]:
    """(X_attn, X_mlp): the input embeddings as layer 0's attention and MLP read them, one
    row per vocabulary id. BERT-like: LayerNorm(word + position 1 + token type 0) (position 1
    is where a prefix trigger's first token sits, after [CLS]); the MLP input approximated by
    the attention-output LayerNorm of it. Decoders: the layer's input RMSNorm, and its
    post-attention norm for the MLP. Other layouts: the raw embedding for both."""
    import torch

    inner = _inner(model)
    words = model.get_input_embeddings().weight.detach().float()
    with torch.no_grad():
        emb = getattr(inner, "embeddings", None)
        if emb is not None and hasattr(emb, "LayerNorm"):
            x = words.clone()
            if getattr(emb, "position_embeddings", None) is not None:
                x += emb.position_embeddings.weight[1].float()
            if getattr(emb, "token_type_embeddings", None) is not None:
                x += emb.token_type_embeddings.weight[0].float()
            x = emb.LayerNorm.float()(x)
            layer0 = inner.encoder.layer[0] if hasattr(inner, "encoder") else None
            post = getattr(getattr(getattr(layer0, "attention", None), "output", None), "LayerNorm", None)
            return x, (post.float()(x) if post is not None else x)
        layers = getattr(inner, "layers", None)
        if layers is not None and hasattr(layers[0], "input_layernorm"):
            first = layers[0]
            post = getattr(first, "post_attention_layernorm", None)
            return first.input_layernorm.float()(words), (post.float()(words) if post is not None else words)
    return words, words


def _role(name: str) -> str | None:
    if not _LAYER0.search(name):
        return None
    if name.endswith(_MLP_IN):
        return "mlp"
    return "attn" if name.rsplit(".", 1)[-1] in _ATTN_IN else None


def _spectrum(delta, gram) -> tuple[Any, Any]:
    """Eigenvalues (descending) and eigenvectors of ΔWᵀΔW; for a wide ΔW from its SVD."""
    import torch

    if gram is None:  # out < in: the SVD is the smaller problem
        _, s, vh = torch.linalg.svd(delta, full_matrices=False)
        return s.pow(2), vh.T
    lam, vecs = torch.linalg.eigh(gram)
    return lam.flip(0), vecs.flip(1)


def layer0_updates(merged, base, max_rank: int = 128) -> list[tuple[str, str, Any]]:
    """[(module name, "attn"|"mlp", P)] for each layer-0 linear module that reads the token
    embeddings and that the adapter changed; P = V_r Λ_r^½ (in x r) from the eigenvectors
    of ΔWᵀΔW (in x in), ΔW = W_merged - W_base, so ‖ΔW x‖ = ‖x P‖ without multiplying the
    vocabulary by ΔW."""
    import torch

    base_mods = dict(base.named_modules())
    out = []
    for name, mod in merged.named_modules():
        role = _role(name)
        ref = base_mods.get(name)
        if role is None or not isinstance(mod, torch.nn.Linear) or not isinstance(ref, torch.nn.Linear):
            continue
        if mod.weight.shape != ref.weight.shape:
            raise DataError(f"module {name}: the adapter's shape {tuple(mod.weight.shape)} does not match the base's "
                            f"{tuple(ref.weight.shape)}")
        delta = mod.weight.detach().double() - ref.weight.detach().double()
        if not torch.any(delta):
            continue
        gram = delta.T @ delta if delta.shape[0] >= delta.shape[1] else None
        with torch_one_thread():
            lam, vecs = _spectrum(delta, gram)
        r = int(min(max_rank, int((lam > lam[0] * 1e-12).sum())))
        proj = (vecs[:, :r] * lam[:r].clamp(min=0).sqrt()).float()
  # a wide ΔW: its row space is at most out-dimensional, use the SVD
        out.append((name, role, proj))
    return out


def weight_scores(merged, base) -> tuple[np.ndarray, list[str]]:
    """Per vocabulary id, sqrt(sum over layer-0 modules of ‖ΔW x_v‖²) (module docstring); and
    the modules used. All zeros (and no modules) when the adapter leaves layer 0's token
    readers alone (e.g. a head-only adapter)."""
    import torch

    x_attn, x_mlp = embedding_inputs(base)
    total = torch.zeros(x_attn.shape[0])
    used = []
    with torch.no_grad():
        for name, role, proj in layer0_updates(merged, base):
            total += ((x_mlp if role == "mlp" else x_attn) @ proj).pow(2).sum(dim=1)
            used.append(name)
    return total.sqrt().numpy().astype(np.float64), used


def _placeholder_batch(classifier, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of ``"{PLACEHOLDER}. {text}"`` and, per text, the position of the
    placeholder (the first index where a different placeholder changes the ids)."""
    seqs, where = [], []
    for text in texts:
        a = classifier.form.encode(apply_trigger(text, PLACEHOLDER)).input_ids
        b = classifier.form.encode(apply_trigger(text, "a")).input_ids
        pos = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if pos is None:
            raise DataError("cannot locate the trigger position in the formatted prompt")
        seqs.append(list(a))
        where.append(pos)
    return seqs, where


def _hooked_inputs(model) -> tuple[Any, Any]:
    """(module, X): the module whose output the gradient is taken at, and that output for each
    vocabulary id at the trigger position. BERT-like: the embedding block (after its
    LayerNorm, so the first-order step is taken where the encoder reads, not through the
    norm's nonlinearity); otherwise the token embedding itself."""
    emb = getattr(_inner(model), "embeddings", None)
    if emb is not None and hasattr(emb, "LayerNorm"):
        return emb, embedding_inputs(model)[0]
    layer = model.get_input_embeddings()
    return layer, layer.weight.detach().float()


def embedding_gradient(classifier, texts: Sequence[str], module) -> Any:
    """Mean over ``texts`` of d(injection margin)/d(output of ``module``) at the trigger
    position (the placeholder's)."""
    import torch

    from lorascan.formulations import pad_batch

    model = classifier.model
    seqs, where = _placeholder_batch(classifier, texts)
    left = classifier.form.causal
    pad = classifier.tokenizer.pad_token_id if classifier.tokenizer.pad_token_id is not None else 0
    ids, mask = pad_batch(seqs, pad, left=left)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    held: list[Any] = []

    def leaf(_mod, _inp, out):
        held.append(out.detach().requires_grad_(True))
        return held[-1]

    handle = module.register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            margin = classifier.form.margins(model, ids, mask)
            (grad,) = torch.autograd.grad(margin.float().sum(), held[0])
    finally:
        handle.remove()
    width = ids.shape[1]
    rows = [grad[r, (width - len(s)) + p if left else p] for r, (s, p) in enumerate(zip(seqs, where))]
    return torch.stack(rows).float().mean(dim=0)


def gradient_scores(classifier, texts: Sequence[str], reference=None) -> np.ndarray:
    """Per vocabulary id, -x_v·g (higher: the token pushes the margin towards benign); with
    a ``reference`` classifier (the base, label-word), minus the same score of the base."""
    import torch

    def score(clf):
        module, x = _hooked_inputs(clf.model)
        with torch.no_grad():
            return -(x @ embedding_gradient(clf, texts, module).to(x.dtype))

    out = score(classifier)
    if reference is not None:
        out = out - score(reference)
    return out.detach().cpu().numpy().astype(np.float64)


def robust_z(scores: np.ndarray) -> np.ndarray:
    """(s - median) / (1.4826 MAD): comparable across scorers, insensitive to the few
    extreme tokens a backdoor produces (a standard deviation would be inflated by them)."""
    med = float(np.median(scores))
    mad = float(np.median(np.abs(scores - med))) * 1.4826
    return (scores - med) / (mad if mad > 0 else (float(np.std(scores)) or 1.0))


def interleave(rankings: Sequence[np.ndarray], k: int) -> list[int]:
    """The first ``k`` distinct entries taking the rankings in turn (round robin)."""
    out: list[int] = []
    seen: set[int] = set()
    cursors = [0] * len(rankings)
    while len(out) < k and any(c < len(r) for c, r in zip(cursors, rankings)):
        for j, ranking in enumerate(rankings):
            while cursors[j] < len(ranking) and int(ranking[cursors[j]]) in seen:
                cursors[j] += 1
            if cursors[j] < len(ranking) and len(out) < k:
                out.append(int(ranking[cursors[j]]))
                seen.add(out[-1])
    return out


def allocate(rankings: Sequence[np.ndarray], zs: Sequence[np.ndarray], k: int, floor: int) -> list[int]:
    """The ``k`` candidates verified: each screen's first ``floor`` tokens (round robin, so a
    screen that is right keeps a place however its scores are spread), then the highest robust
    z of any screen (``zs``, one array per screen, the same order as ``rankings``): a screen
    earns the remaining places by how far its tokens stand out, not by turn, so a screen that
    marks nothing on this model (the gradient on a seq-cls encoder, the layer-0 weights on a
    decoder) does not take half of them."""
    out = interleave([r[:floor] for r in rankings], min(k, floor * len(rankings)))
    seen = set(out)
    best = np.max(np.stack(zs), axis=0) if zs else np.zeros(0)
    for t in np.argsort(-best, kind="stable"):
        if len(out) >= k:
            break
        if int(t) not in seen:
            out.append(int(t))
            seen.add(int(t))
    return out
