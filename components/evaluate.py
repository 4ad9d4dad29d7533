"""Stage ``evaluate``: the task suite against tuned baselines (``celo evaluate``).

``evaluate`` scores the theta a pipeline just trained; ``evaluate_checkpoint``
scores a released checkpoint named by a string (re-evaluation pipeline).
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from components.images import CPU


@dsl.component(base_image=CPU, install_kfp_package=False)
def evaluate(
    theta: Input[Model],
    results: Output[Artifact],
    report: Output[HTML],
    scores: Output[Metrics],
    tracking_log: Output[Artifact],
    optimizer: str = "celo",
    baselines: str = "adam",
    suite: str = "velodrome17",
    steps: int = 0,
    lrs: str = "",
    seeds: str = "0",
    workers: int = 0,
    reps: int = 2000,
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo",
):
    """Evaluate a meta-trained theta on a suite, scored against LR-tuned Adam.

    Args:
      theta: the meta-training output (its ``theta.state`` is found inside).
      results: the results folder: ``summary.json`` (IQM with CIs, per-task
        scores), curves, tables and plots.
      report: the tables and plots as one HTML page.
      scores: per-task scores and IQMs as KFP metrics.
      tracking_log: the stage's tracking log (JSON lines).
      optimizer: the registered optimizer the theta belongs to.
      baselines: hand-designed optimizers to tune and compare, space-separated.
      suite: ``velodrome17``, ``velodrome17_small`` or ``fast_velo``.
      steps: horizon of every task; 0 keeps the suite's.
      lrs: learning-rate grid of the baselines, space-separated; empty keeps
        the suite's.
      seeds: space-separated seeds.
      workers: worker processes; 0 picks one per core (up to 2).
      reps: bootstrap repetitions for the confidence intervals.
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
    """
    from celo.cli import run_stage, theta_in

    run_stage(
        "evaluate",
        {
            "--optimizers": [f"{optimizer}={theta_in(theta.path)}", *baselines.split()],
            "--suite": suite,
            "--steps": steps or None,
            "--lrs": lrs.split(),
            "--seeds": seeds.split(),
            "--workers": workers or None,
            "--reps": reps,
            "--output": results.path,
            "--no-progress": True,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": "evaluate",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
            "--tracking-log": tracking_log.path,
        },
        metrics=scores,
        report=report,
        report_from=results.path,
    )


@dsl.component(base_image=CPU, install_kfp_package=False)
def evaluate_checkpoint(
    checkpoint: str,
    results: Output[Artifact],
    tracking_log: Output[Artifact],
    baselines: str = "adam",
    suite: str = "velodrome17",
    steps: int = 0,
    lrs: str = "",
    seeds: str = "0",
    workers: int = 0,
    reps: int = 2000,
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo-reeval",
):
    """Evaluate one released checkpoint; a failure is recorded, not raised.

    A checkpoint that cannot be downloaded leaves ``results/error.json`` and
    the task succeeds, so that the other checkpoints of the fan-out are still
    evaluated and compared; the comparison stage then fails the run, naming it.

    Args:
      checkpoint: ``owner/repo`` or ``hf://owner/repo`` (optimizer named after
        the repo, ``celo-adam`` → ``celo_adam``), a ``theta.state`` path, or a
        full ``[LABEL:]NAME=URI`` spec.
      results: the results folder (``summary.json``…, or ``error.json``).
      tracking_log: the stage's tracking log (JSON lines).
      baselines: hand-designed optimizers to tune and compare, space-separated.
      suite: ``velodrome17``, ``velodrome17_small`` or ``fast_velo``.
      steps: horizon of every task; 0 keeps the suite's.
      lrs: learning-rate grid of the baselines, space-separated.
      seeds: space-separated seeds.
      workers: worker processes; 0 picks one per core (up to 2).
      reps: bootstrap repetitions for the confidence intervals.
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
    """
    from celo.cli import checkpoint_spec, run_stage

    run_stage(
        "evaluate",
        {
            "--optimizers": [checkpoint_spec(checkpoint), *baselines.split()],
            "--suite": suite,
            "--steps": steps or None,
            "--lrs": lrs.split(),
            "--seeds": seeds.split(),
            "--workers": workers or None,
            "--reps": reps,
            "--output": results.path,
            "--no-progress": True,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": f"evaluate {checkpoint}",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
            "--tracking-log": tracking_log.path,
        },
        soft_fail_dir=results.path,
    )
