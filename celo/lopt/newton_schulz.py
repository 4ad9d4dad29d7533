"""Newton–Schulz orthogonalisation of matrices (Muon's quintic iteration).

Used by Celo2 (spec §14) to orthogonalise the MLP's proposed step of every
tensor of rank ≥ 2, over its last two axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Coefficients ``(a, b, c)`` of ``X ← aX + (bA + cA²)X`` with ``A = XXᵀ``.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    x: jnp.ndarray, coeffs: tuple = NS_COEFFS, steps: int = 5, eps: float = 1e-8
) -> jnp.ndarray:
    """Push the singular values of ``x`` (over its last two axes) towards 1.

    ``x`` is divided by its Frobenius norm plus ``eps`` and iterated ``steps``
    times; leading axes are batch axes. A matrix with more rows than columns is
    iterated in transposed form, so ``A`` is always the smaller Gram matrix.
    The quintic is tuned for speed, not convergence: the singular values end
    up spread around 1 (about 0.7–1.2) rather than equal to it.

    Args:
      x: array of rank ≥ 2.
      coeffs: the quintic's ``(a, b, c)``.
      steps: number of iterations.
      eps: added to the norm so a zero matrix stays zero.

    Returns:
      An array shaped like ``x``.
    """
    if x.ndim < 2:
        raise ValueError(f"newton_schulz needs rank >= 2, got shape {x.shape}")
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = jnp.swapaxes(x, -2, -1)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    a, b, c = (jnp.asarray(k, x.dtype) for k in coeffs)

    def body(_, x):
        gram = x @ jnp.swapaxes(x, -2, -1)
        poly = b * gram + c * gram @ gram
        return a * x + poly @ x

    x = jax.lax.fori_loop(0, steps, body, x)
    return jnp.swapaxes(x, -2, -1) if transposed else x
