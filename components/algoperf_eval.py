"""Stage ``algoperf_eval``: AlgoPerf-lite time-to-target (``celo algoperf``)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from components.images import CPU


@dsl.component(base_image=CPU, install_kfp_package=False)
def algoperf_eval(
    theta: Input[Model],
    results: Output[Artifact],
    report: Output[HTML],
    scores: Output[Metrics],
    tracking_log: Output[Artifact],
    optimizer: str = "celo",
    baselines: str = "adam",
    workloads: str = "",
    max_steps: int = 0,
    seed: int = 0,
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo",
):
    """Run the AlgoPerf-lite workloads through the AlgoPerf submission API.

    Args:
      theta: the meta-training output (its ``theta.state`` is found inside).
      results: time-to-target tables, performance profiles and scores.
      report: the tables and plots as one HTML page.
      scores: time-to-target and profile scores as KFP metrics.
      tracking_log: the stage's tracking log (JSON lines).
      optimizer: the registered optimizer the theta belongs to.
      baselines: optimizers to compare with, space-separated.
      workloads: space-separated workload names (``mnist``,
        ``fashion_mnist_cnn``, ``shakespeare_char_lm``, ``mnist_autoencoder``);
        empty runs all of them.
      max_steps: step limit per run; 0 keeps each workload's ``step_hint``.
      seed: seed of every run.
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
    """
    from celo.cli import run_stage, theta_in

    run_stage(
        "algoperf run",
        {
            "--submissions": [f"{optimizer}={theta_in(theta.path)}", *baselines.split()],
            "--workloads": workloads.split(),
            "--max-steps": max_steps or None,
            "--seed": seed,
            "--output": results.path,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": "algoperf_eval",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
            "--tracking-log": tracking_log.path,
        },
        metrics=scores,
        report=report,
        report_from=results.path,
    )
