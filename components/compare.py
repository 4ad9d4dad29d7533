"""Stage ``compare``: one comparison of several evaluations (``celo pipeline compare``)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Output

from components.images import CPU


@dsl.component(base_image=CPU, install_kfp_package=False)
def compare(
    results: Input[list[Artifact]],
    comparison: Output[Artifact],
    report: Output[HTML],
    pipeline_run_id: str = "",
    mlflow_uri: str = "",
    mlflow_experiment: str = "celo-reeval",
):
    """Collect evaluation results into one IQM table; fail if any evaluation failed.

    Args:
      results: the results folders of the fanned-out evaluations.
      comparison: ``comparison.json`` and ``comparison.md``.
      report: the comparison as an HTML page.
      pipeline_run_id: KFP run id; groups the stages under one MLflow run.
      mlflow_uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI``.
      mlflow_experiment: MLflow experiment.
    """
    from celo.cli import run_stage

    run_stage(
        "pipeline compare",
        {
            "--results": [r.path for r in results],
            "--output": comparison.path,
            "--pipeline-run-id": pipeline_run_id,
            "--stage": "compare",
            "--mlflow-uri": mlflow_uri,
            "--mlflow-experiment": mlflow_experiment,
        },
        report=report,
        report_from=comparison.path,
    )
