"""A small BERT-style masked text encoder to develop against, made with ``transformers``.

The weights are random (a seeded ``BertConfig`` initialisation, no download): the model is real in
structure (embeddings with LayerNorm, eager multi-head attention with an additive padding mask,
GELU feed-forward, post-LayerNorm), its weights are drawn wider than BERT's default so that
attention is peaked and the mask matters (see ``CONFIG``), but its outputs mean nothing
linguistically. That is all the precision tools need: errors are measured against the same
model's FP32 output.

Two mask variants, both exported with ``torch.onnx.export`` (the TorchScript exporter, opset 17),
inputs ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (int64, dynamic ``batch`` and
``sequence`` axes), output ``last_hidden_state`` [batch, sequence, hidden]:

- ``"inf"``: the padding mask is added to the attention scores as ``-inf`` (a wrapper builds
  ``where(mask, 0, -inf)`` and hands it to the encoder), as the issue's user model does;
- ``"lowest"``: ``transformers``' own mask, float32's lowest value (-3.4e38) on padding.

Both give the same FP32 hidden states. Models are cached under the test cache keyed by the
versions of torch/transformers and the config (written atomically). Samples are ``.npz`` files,
one per sample, of token ids with padding: real lengths drawn between ``min_len`` and ``SEQ``,
ids uniform over the vocabulary after the special tokens, ``attention_mask`` 0 on padding.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

SEQ = 32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
CONFIG = dict(
    vocab_size=1000,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=512,
    max_position_embeddings=64,
    type_vocab_size=2,
    # 0.12, not BERT's 0.02: with 0.02 a random encoder attends almost uniformly and its output
    # hardly depends on the mask (hidden states with and without it: cosine 0.9999); with 0.12 the
    # attention is peaked (largest probability 0.26 on average) and dropping the mask moves the
    # hidden states of the real tokens to cosine 0.97 (0.77 at worst), as in a trained model.
    initializer_range=0.12,
)
SEED = 0
OPSET = 17
PAD_ID, CLS_ID, SEP_ID, FIRST_WORD_ID = 0, 1, 2, 5


def _cache_dir() -> Path:
    return Path(os.environ.get("TRTQ_TEST_CACHE", Path.home() / ".cache" / "trtq-tests")) / "bert"


def _key(variant: str) -> str:
    import torch
    import transformers

    text = json.dumps(
        {"torch": torch.__version__, "transformers": transformers.__version__, "config": CONFIG,
         "seed": SEED, "opset": OPSET, "variant": variant},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _module(variant: str):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    config = BertConfig(**CONFIG, attn_implementation="eager")
    bert = BertModel(config, add_pooling_layer=False).eval()

    class NegInfMask(torch.nn.Module):
        """The encoder with ``where(mask, 0, -inf)`` added to the attention scores."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            keep = attention_mask[:, None, None, :] > 0
            zero = torch.zeros((), dtype=hidden.dtype)
            fill = torch.full((), float("-inf"), dtype=hidden.dtype)
            return self.bert.encoder(hidden, attention_mask=torch.where(keep, zero, fill)).last_hidden_state

    class LowestMask(torch.nn.Module):
        """The encoder as ``transformers`` masks it (float32's lowest value on padding)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return {"inf": NegInfMask, "lowest": LowestMask}[variant]().eval()


def bert_model_path(variant: str = "inf") -> Path:
    """The exported encoder (``variant`` ``"inf"`` or ``"lowest"``), built once per cache."""
    path = _cache_dir() / f"bert-tiny-{variant}-{_key(variant)}.onnx"
    if path.exists():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model = _module(variant)
    feeds = make_samples(2, seed=SEED)
    args = tuple(torch.from_numpy(feeds[name]) for name in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*INPUTS, OUTPUT)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer and deprecation notices
        torch.onnx.export(
            model, args, str(tmp), input_names=list(INPUTS), output_names=[OUTPUT],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    os.replace(tmp, path)
    return path


def make_samples(count: int, *, seed: int, seq: int = SEQ, min_len: int = 6) -> dict[str, np.ndarray]:
    """``count`` padded token sequences: ``[CLS] words [SEP] pad...``; the first sample uses the whole
    length (no padding), the others a real length uniform in [min_len, seq]."""
    rng = np.random.default_rng(seed)
    vocab = CONFIG["vocab_size"]
    ids = np.full((count, seq), PAD_ID, np.int64)
    mask = np.zeros((count, seq), np.int64)
    types = np.zeros((count, seq), np.int64)
    for i in range(count):
        n = seq if i == 0 else int(rng.integers(min_len, seq + 1))
        ids[i, 0], ids[i, n - 1] = CLS_ID, SEP_ID
        ids[i, 1 : n - 1] = rng.integers(FIRST_WORD_ID, vocab, n - 2)
        mask[i, :n] = 1
        second = int(rng.integers(2, n - 1))  # a sentence pair: segment B from here to [SEP]
        types[i, second:n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def write_sample_folder(folder: Path, count: int, *, seed: int) -> Path:
    """One ``.npz`` per sample (1-D arrays of length ``SEQ``, one per input name)."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = make_samples(count, seed=seed)
    for i in range(count):
        np.savez(folder / f"{i:03d}.npz", **{name: samples[name][i] for name in INPUTS})
    return folder


def sample_batches(count: int, *, seed: int) -> list[dict[str, np.ndarray]]:
    """``make_samples`` as batches of one sample each ([1, SEQ] per input)."""
    samples = make_samples(count, seed=seed)
    return [{name: samples[name][i : i + 1] for name in INPUTS} for i in range(count)]


def token_cosine(ref: list[np.ndarray], got: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Mean cosine of hidden states over the real tokens: one cosine per token whose attention mask
    is 1, averaged over all samples. ``ref``/``got``: [1, seq, hidden] per sample; ``masks``: [1, seq]."""
    cos = []
    for r, g, mask in zip(ref, got, masks, strict=True):
        real = np.asarray(mask).reshape(-1) > 0
        a = np.asarray(r, np.float64).reshape(real.size, -1)[real]
        b = np.asarray(g, np.float64).reshape(real.size, -1)[real]
        cos += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
    return float(np.mean(cos))
