"""Truncation schedules: how long each inner trajectory runs (spec §10.5).

A schedule is a hashable frozen dataclass with two pure functions that run
per inner problem under ``vmap``:

* ``init(key) -> length``: the horizon of a new trajectory (int32).
* ``next(length, step, key) -> (is_done, length)``: called after every inner
  step with the step counter that follows it. ``is_done`` is ``step >= length``;
  when it is set the length is re-drawn, so that the reset on the next step
  initialises the optimizer with the new horizon (the reference's order).

The learned optimizer receives ``num_steps = length``: Celo's progress feature
is relative to the sampled horizon during meta-training.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ConstantTruncationSchedule:
    """Every trajectory lasts ``total_length`` steps."""

    total_length: int

    def init(self, key: jax.Array) -> jnp.ndarray:
        del key
        return jnp.asarray(self.total_length, jnp.int32)

    def next(self, length, step, key):
        del key
        return step >= length, length


@dataclasses.dataclass(frozen=True)
class LogUniformLengthSchedule:
    """Horizons ``int(exp(U[ln min_length, ln max_length]))`` (a truncating cast).

    Celo meta-trains with ``LogUniformLengthSchedule(100, 2000)``.
    """

    min_length: int
    max_length: int

    def sample(self, key: jax.Array) -> jnp.ndarray:
        u = jax.random.uniform(
            key, (), minval=math.log(self.min_length), maxval=math.log(self.max_length)
        )
        return jnp.exp(u).astype(jnp.int32)

    def init(self, key: jax.Array) -> jnp.ndarray:
        return self.sample(key)

    def next(self, length, step, key):
        done = step >= length
        # Under vmap a lax.cond is a select anyway; a scalar draw costs nothing.
        return done, jnp.where(done, self.sample(key), length)


@dataclasses.dataclass(frozen=True)
class NeverEndingTruncationSchedule:
    """Trajectories never finish (FullES unrolls a fixed horizon itself).

    ``init`` returns ``nominal_length``, the horizon handed to the optimizer.
    """

    nominal_length: int = 1

    def init(self, key: jax.Array) -> jnp.ndarray:
        del key
        return jnp.asarray(self.nominal_length, jnp.int32)

    def next(self, length, step, key):
        del key
        return jnp.zeros_like(step, dtype=jnp.bool_), length


TruncationSchedule = (
    ConstantTruncationSchedule | LogUniformLengthSchedule | NeverEndingTruncationSchedule
)


def make_schedule(min_length: int, max_length: int) -> TruncationSchedule:
    """LogUniform(min, max), or Constant when the two are equal."""
    if min_length == max_length:
        return ConstantTruncationSchedule(int(min_length))
    return LogUniformLengthSchedule(int(min_length), int(max_length))
