"""Stage ``publish``: checkpoint, config and model card to the Hugging Face Hub."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import CPU


@dsl.component(base_image=CPU, install_kfp_package=False)
def publish(
    theta: Input[Model],
    results: Input[Artifact],
    card: Output[Artifact],
    repo_id: str,
    dry_run: bool = True,
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo",
):
    """Publish the final theta with its model card (``celo publish``).

    The token comes from the ``HF_TOKEN`` environment variable, mounted from a
    Kubernetes secret; it is never a parameter. Publishing is idempotent.

    Args:
      theta: the meta-training output (its ``theta.state`` is found inside).
      results: the evaluation results the model card reports.
      card: the folder that is (or, with ``dry_run``, would be) uploaded.
      repo_id: ``org/name`` of the model repository.
      dry_run: write the folder only.
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
    """
    from celo.cli import run_stage, theta_in

    run_stage(
        "publish",
        {
            "--checkpoint": theta_in(theta.path),
            "--results": results.path,
            "--repo-id": repo_id,
            "--dry-run": dry_run,
            "--out": card.path,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": "publish",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
        },
    )
