"""Language-model tasks: the small decoder-only transformers and the LSTM LM.

``TransformerLM_LM1B_MultiRuntime_{0..11}`` follow learned_optimization's
``tasks/transformer.py`` (a fork of haiku's example transformer: pre-LayerNorm
blocks, 32-wide heads, GELU MLP ×4, **no positional embedding**) and
``RNNLM_*`` its ``TeacherForcedRNNLM`` (embedding → LSTM with a learnable
initial state → linear). Both score the mean cross-entropy over non-padding
positions (``obs != 0``).

The originals read LM1B / Wikipedia through the T5 SentencePiece vocabulary of
32,000 pieces plus 100 sentinel ids, i.e. a 32,100-way model. Those corpora
are not available offline, so the data come from word-level corpora with at
most 32,000 ids (``celo.data.text``) while the model keeps its 32,100 rows
(the sentinels were never produced by the original tokenizer either).
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from celo.lopt.nets import LSTMState, lstm_apply
from celo.tasks import layers
from celo.tasks.base import Task, sparse_softmax_cross_entropy
from celo.tasks.sources import text_source

#: Model vocabulary of the reference's "32k" tasks: 32,000 pieces + 100 extra ids.
T5_32K_VOCAB_SIZE = 32100
#: Word-vocabulary cap of the substitute corpora.
DATA_VOCAB_SIZE = 32000
#: Substitute corpus per original data set (see the README's data substitutions).
CORPUS = {"lm1b": "brown", "wikipedia": "shakespeare"}


def _masked_mean(losses: jnp.ndarray, obs: jnp.ndarray) -> jnp.ndarray:
    mask = (obs != 0).astype(losses.dtype)
    return jnp.sum(losses * mask) / jnp.sum(mask)


class _TransformerTask(Task):
    """Decoder-only transformer LM.

    ``cfg`` holds ``num_heads``, ``d_model``, ``num_layers`` and ``dropout_rate``.
    """

    key_size = 32

    def __init__(self, datasets, cfg: dict, vocab_size: int = T5_32K_VOCAB_SIZE, *, name: str):
        self.datasets = datasets
        self.cfg = dict(cfg)
        self.vocab_size = int(vocab_size)
        self._name = name

    def init(self, key: jax.Array) -> dict:
        keys = layers.KeySeq(key)
        d, heads, n_layers = self.cfg["d_model"], self.cfg["num_heads"], self.cfg["num_layers"]
        scale = 2.0 / n_layers
        width = heads * self.key_size
        p = {"transformer/embed": layers.embed_init(keys, self.vocab_size, d)}
        for i in range(n_layers):
            h = f"transformer/h{i}"
            p[f"{h}_ln_1"] = layers.layer_norm_init(d)
            for proj in ("query", "key", "value"):
                p[f"{h}_attn/{proj}"] = layers.linear_init(
                    keys, d, width, layers.variance_scaling_std(scale, d)
                )
            p[f"{h}_attn/linear"] = layers.linear_init(
                keys, width, d, layers.variance_scaling_std(scale, width)
            )
            next(keys)  # haiku draws the attention-dropout key even at init
            p[f"{h}_ln_2"] = layers.layer_norm_init(d)
            p[f"{h}_mlp/linear"] = layers.linear_init(
                keys, d, 4 * d, layers.variance_scaling_std(scale, d)
            )
            p[f"{h}_mlp/linear_1"] = layers.linear_init(
                keys, 4 * d, d, layers.variance_scaling_std(scale, 4 * d)
            )
            next(keys)  # and the MLP-dropout key
        p["transformer/h_f"] = layers.layer_norm_init(d)
        p["transformer/linear"] = layers.linear_init(keys, d, self.vocab_size)
        return p

    def _attention(self, p: dict, prefix: str, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        b, t, _ = x.shape
        heads = self.cfg["num_heads"]

        def project(name):
            return layers.linear(p[f"{prefix}/{name}"], x).reshape(b, t, heads, self.key_size)

        q, k, v = project("query"), project("key"), project("value")
        logits = jnp.einsum("bthd,bThd->bhtT", q, k) / np.sqrt(self.key_size).astype(x.dtype)
        logits = jnp.where(mask, logits, -1e30)
        weights = jax.nn.softmax(logits)
        attn = jnp.einsum("bhtT,bThd->bthd", weights, v).reshape(b, t, heads * self.key_size)
        return layers.linear(p[f"{prefix}/linear"], attn)

    def logits(self, params: dict, key: jax.Array, obs: jnp.ndarray) -> jnp.ndarray:
        """Next-token logits (B, T, V); ``key`` drives dropout."""
        keys = layers.KeySeq(key)
        rate = float(self.cfg["dropout_rate"])
        t = obs.shape[1]
        causal = np.tril(np.ones((t, t), dtype=bool))
        mask = (obs != 0)[:, None, None, :] & causal
        h = layers.embed(params["transformer/embed"], obs)
        for i in range(self.cfg["num_layers"]):
            pre = f"transformer/h{i}"
            h_norm = layers.layer_norm(params[f"{pre}_ln_1"], h)
            h = h + layers.dropout(
                next(keys), rate, self._attention(params, f"{pre}_attn", h_norm, mask)
            )
            h_norm = layers.layer_norm(params[f"{pre}_ln_2"], h)
            dense = layers.linear(params[f"{pre}_mlp/linear"], h_norm)
            dense = layers.linear(params[f"{pre}_mlp/linear_1"], jax.nn.gelu(dense))
            h = h + layers.dropout(next(keys), rate, dense)
        h = layers.layer_norm(params["transformer/h_f"], h)
        return layers.linear(params["transformer/linear"], h)

    def loss(self, params: dict, key: jax.Array, data: dict) -> jnp.ndarray:
        logits = self.logits(params, key, data["obs"])
        return _masked_mean(sparse_softmax_cross_entropy(logits, data["target"]), data["obs"])


class _TeacherForcedRNNLM(Task):
    """Embedding → LSTM (learnable initial state) → linear, teacher forced."""

    def __init__(
        self,
        datasets,
        hidden_size: int,
        embedding_dim: int,
        vocab_size: int = T5_32K_VOCAB_SIZE,
        *,
        name: str,
    ):
        self.datasets = datasets
        self.hidden_size = int(hidden_size)
        self.embedding_dim = int(embedding_dim)
        self.vocab_size = int(vocab_size)
        self._name = name

    def init(self, key: jax.Array) -> dict:
        keys = layers.KeySeq(key)
        h = self.hidden_size
        return {
            "embed": layers.embed_init(keys, self.vocab_size, self.embedding_dim),
            # top-level hk.get_parameter lands in haiku's "~" module; 0 = hidden, 1 = cell
            "~": {"initial_state_0": jnp.zeros((1, h)), "initial_state_1": jnp.zeros((1, h))},
            "lstm/linear": layers.linear_init(keys, self.embedding_dim + h, 4 * h),
            "linear": layers.linear_init(keys, h, self.vocab_size),
        }

    def logits(self, params: dict, obs: jnp.ndarray) -> jnp.ndarray:
        """Next-token logits (B, T, V)."""
        x = layers.embed(params["embed"], obs)
        batch = obs.shape[0]
        init = params["~"]
        state = LSTMState(
            hidden=jnp.tile(init["initial_state_0"], (batch, 1)),
            cell=jnp.tile(init["initial_state_1"], (batch, 1)),
        )

        def step(state, x_t):
            out, state = lstm_apply(params["lstm/linear"], x_t, state)
            return state, out

        _, outs = jax.lax.scan(step, state, jnp.swapaxes(x, 0, 1))
        return layers.linear(params["linear"], jnp.swapaxes(outs, 0, 1))

    def loss(self, params: dict, key: jax.Array, data: dict) -> jnp.ndarray:
        del key
        logits = self.logits(params, data["obs"])
        return _masked_mean(sparse_softmax_cross_entropy(logits, data["target"]), data["obs"])


# -- registry entries ---------------------------------------------------------------------
# (num_heads, d_model, num_layers, batch_size, sequence_length, dropout_rate), in the
# reference's order: each config is more expensive per step than the previous one.
MULTIRUNTIME_CONFIGS = [
    (5, 20, 1, 4, 8, 0.1),
    (6, 24, 1, 4, 8, 0.1),
    (4, 32, 2, 8, 8, 0.0),
    (4, 32, 1, 8, 16, 0.0),
    (4, 32, 2, 16, 4, 0.0),
    (4, 32, 1, 8, 32, 0.0),
    (5, 80, 1, 4, 64, 0.0),
    (7, 112, 3, 16, 32, 0.0),
    (4, 128, 1, 64, 32, 0.0),
    (4, 256, 2, 64, 64, 0.0),
    (4, 256, 3, 128, 64, 0.0),
    (19, 304, 2, 256, 32, 0.0),
]


def _transformer(index: int, *, data_dir: str | Path | None = None, seed: int = 0) -> Task:
    heads, d, n_layers, bs, seq, rate = MULTIRUNTIME_CONFIGS[index]
    cfg = {"num_heads": heads, "d_model": d, "num_layers": n_layers, "dropout_rate": rate}
    data = text_source(
        CORPUS["lm1b"],
        bs,
        seq,
        vocab="word",
        vocab_size=DATA_VOCAB_SIZE,
        data_dir=data_dir,
        seed=seed,
    )
    return _TransformerTask(data, cfg, name=f"TransformerLM_LM1B_MultiRuntime_{index}")


def _rnn_name(source: str, hidden: int, embed_dim: int) -> str:
    tag = {"lm1b": "lm1b32k", "wikipedia": "wikipediaen32k"}[source]
    return f"RNNLM_{tag}_Patch32_LSTM{hidden}_Embed{embed_dim}"


def _rnn(source: str, hidden: int, embed_dim: int, *, data_dir=None, seed=0) -> Task:
    data = text_source(
        CORPUS[source],
        128,
        32,
        vocab="word",
        vocab_size=DATA_VOCAB_SIZE,
        data_dir=data_dir,
        seed=seed,
    )
    return _TeacherForcedRNNLM(data, hidden, embed_dim, name=_rnn_name(source, hidden, embed_dim))


FACTORIES = {}
for _i, (_h, _d, _l, _bs, _seq, _rate) in enumerate(MULTIRUNTIME_CONFIGS):
    _fn = functools.partial(_transformer, _i)
    _fn.__doc__ = (
        f"Transformer LM: {_h} heads, d_model {_d}, {_l} layer(s), dropout {_rate}; "
        f"batch {_bs}x{_seq} tokens."
    )
    FACTORIES[f"TransformerLM_LM1B_MultiRuntime_{_i}"] = _fn
for _source in ("lm1b", "wikipedia"):
    _fn = functools.partial(_rnn, _source, 256, 128)
    _fn.__doc__ = (
        "Teacher-forced LSTM 256 LM, embedding 128, learnable initial state; batch 128x32."
    )
    FACTORIES[_rnn_name(_source, 256, 128)] = _fn
# Importable under the reference's names, e.g. ``from celo.tasks.lm import RNNLM_...``.
globals().update(FACTORIES)
