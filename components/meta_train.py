"""Stage ``meta_train``: PES meta-training, phase 1 or phase 2 (``celo train``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components.images import CPU


@dsl.component(base_image=CPU, install_kfp_package=False)
def meta_train(
    phase: int,
    theta: Output[Model],
    tracking_log: Output[Artifact],
    metrics: Output[Metrics],
    preset: str = "phase1",
    seed: int = 0,
    init_theta: Input[Model] = None,
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo",
    register_model: str = "",
    model_alias: str = "",
):
    """Meta-train Celo for one phase.

    Phase 1 trains the per-parameter MLP (``celo_phase1``); phase 2 starts from
    the phase-1 theta and trains the scheduler (``celo``). One component serves
    both, so the phases cannot drift apart.

    Args:
      phase: 1 or 2.
      theta: the experiment folder; ``theta.state`` is at ``train/phase<N>/``.
      tracking_log: every metric and artifact the stage tracked (JSON lines);
        it is the record of the run when MLflow was unreachable.
      metrics: the last value of every tracked metric.
      preset: ``celo train`` preset of this phase (``phase1``, ``phase2``,
        ``smoke`` or ``smoke_phase2``).
      seed: meta-training seed.
      init_theta: the phase-1 theta (phase 2 only).
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
      register_model: if set, register the final theta.state under this name.
      model_alias: alias of the registered version.
    """
    from celo.cli import run_stage, theta_in

    run_stage(
        "train",
        {
            "--preset": preset,
            "--seed": seed,
            "--experiment_root": theta.path,
            "--exp_id": f"phase{phase}",
            "--init_from_ckpt": theta_in(init_theta.path) if init_theta else None,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": f"meta_train_phase{phase}",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
            "--register-model": register_model,
            "--model-alias": model_alias,
            "--tracking-log": tracking_log.path,
        },
        metrics=metrics,
    )
