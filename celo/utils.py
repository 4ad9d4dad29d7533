"""Checkpoint helpers with the reference's names (``celo/utils.py``, spec §2.7)."""

from __future__ import annotations

import collections
import logging
from typing import Any

import jax

from celo import checkpoints
from celo.optimizers.base import LearnedOptimizer, Optimizer

log = logging.getLogger(__name__)


def pytree_to_ordered_dict(tree: Any) -> collections.OrderedDict:
    """Flatten to ``{"/a/b/c": leaf}`` in JAX's (sorted) leaf order."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = collections.OrderedDict()
    for path, leaf in flat:
        out["/" + "/".join(_key_str(k) for k in path)] = leaf
    return out


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def load_from_pretrained(input_tree: Any, pretrained_tree: Any) -> Any:
    """Copy every leaf of ``pretrained_tree`` whose key path exists in ``input_tree``.

    Leaves missing from the pretrained tree keep their values. Shapes must agree
    where paths match. Found and missing paths are logged.
    """
    pre = pytree_to_ordered_dict(pretrained_tree)
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(input_tree)
    new_leaves, found, missing, bad = [], [], [], []
    for path, leaf in leaves_with_path:
        name = "/" + "/".join(_key_str(k) for k in path)
        if name in pre:
            value = pre[name]
            if tuple(value.shape) != tuple(leaf.shape):
                bad.append(f"{name}: pretrained {tuple(value.shape)}, expected {tuple(leaf.shape)}")
                continue
            new_leaves.append(jax.numpy.asarray(value, dtype=leaf.dtype))
            found.append(name)
        else:
            new_leaves.append(leaf)
            missing.append(name)
    if bad:
        raise checkpoints.CheckpointError("pretrained shapes do not match: " + "; ".join(bad))
    log.info("load_from_pretrained: %d keys loaded, %d kept: %s", len(found), len(missing), missing)
    return jax.tree_util.tree_unflatten(treedef, new_leaves)


def init_lopt_from_ckpt(
    lopt: LearnedOptimizer, path: str, key: jax.Array | None = None
) -> Optimizer:
    """Load ``theta.state`` at ``path`` into ``lopt``'s layout and bind it."""
    template = lopt.init(key if key is not None else jax.random.PRNGKey(0))
    theta = checkpoints.load_state(path, template)
    return lopt.opt_fn(theta)
