"""The slice of AlgoPerf's ``algoperf.spec`` that submissions and AlgoPerf-lite use.

Names and meanings follow AlgoPerf v0.6 (``algoperf/spec.py``), so a
submission written against this module runs unchanged against the real
package: the submission imports ``algoperf.spec`` when it is installed and
this module otherwise. Only what CPU-sized workloads need is here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, NamedTuple


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7


class ShapeTuple:
    """A parameter's shape, as AlgoPerf's ``param_shapes`` holds it."""

    def __init__(self, shape_tuple: tuple[int, ...]):
        self.shape_tuple = tuple(shape_tuple)

    def __repr__(self) -> str:
        return f"ShapeTuple({self.shape_tuple})"


class Workload:
    """What a submission may read from a workload (AlgoPerf's ``spec.Workload``).

    Subclasses define the model, loss, data and targets. The submission API
    only touches ``init_model_fn``, ``model_fn``, ``loss_fn``, ``param_shapes``,
    ``model_params_types``, ``step_hint`` and ``loss_type``.
    """

    #: Metric compared with the targets, e.g. ``"accuracy"`` or ``"loss"``.
    target_metric_name: str = "accuracy"
    #: Whether a larger metric is better (accuracy) or a smaller one (loss).
    target_metric_higher_is_better: bool = True
    validation_target_value: float
    test_target_value: float
    step_hint: int
    max_allowed_runtime_sec: float
    eval_period_time_sec: float
    eval_batch_size: int
    loss_type: LossType
    _param_shapes: Any = None
    _param_types: Any = None

    @property
    def param_shapes(self) -> Any:
        return self._param_shapes

    @property
    def model_params_types(self) -> Any:
        return self._param_types

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        return self._reached(
            eval_result[f"validation/{self.target_metric_name}"], self.validation_target_value
        )

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        return self._reached(eval_result[f"test/{self.target_metric_name}"], self.test_target_value)

    def _reached(self, value: float, target: float) -> bool:
        return value >= target if self.target_metric_higher_is_better else value <= target

    # The API; see celo.evaluation.algoperf.workloads for the implementations.
    def init_model_fn(self, rng) -> tuple[Any, Any]:
        raise NotImplementedError

    def model_fn(
        self,
        params,
        augmented_and_preprocessed_input_batch,
        model_state,
        mode: ForwardPassMode,
        rng,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Any, Any]:
        raise NotImplementedError

    def loss_fn(
        self, label_batch, logits_batch, mask_batch=None, label_smoothing: float = 0.0
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _build_input_queue(
        self, data_rng, split: str, data_dir: str | None, global_batch_size: int
    ) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def eval_model(
        self, global_batch_size: int, params, model_state, rng, data_dir: str | None
    ) -> dict[str, float]:
        raise NotImplementedError


class TrainingCompleteError(Exception):
    """Raised by a submission that has nothing left to do (as in AlgoPerf)."""


class Hyperparameters(NamedTuple):
    """External-tuning hyperparameters, as AlgoPerf builds them from a search space."""

    learning_rate: float = 1e-3
    label_smoothing: float = 0.0
