"""Scheduled re-evaluation of released checkpoints: fan out, evaluate, compare.

``celo pipeline schedule --cron "0 0 3 * * 1" --checkpoints amoudgl/celo,…``
creates the recurring run. A checkpoint that cannot be downloaded is recorded
by its evaluation, the others still run, and the comparison stage fails the
run naming it.
"""

from kfp import dsl

from components.compare import compare
from components.evaluate import evaluate_checkpoint
from components.images import for_target
from pipelines.platform import configure

#: Evaluations running at once; each takes a node of the target's pool.
PARALLELISM = 4


def build(target: str = "cpu"):
    """The pipeline function with its evaluations placed for ``target``."""
    eval_op = for_target(evaluate_checkpoint, target)

    @dsl.pipeline(
        name="celo-reeval",
        description="Re-evaluate released Celo checkpoints on "
        "the task suite and compare them in one table.",
    )
    def celo_reeval(
        checkpoints: list[str] = ["amoudgl/celo", "amoudgl/celo-adam"],  # noqa: B006
        suite: str = "velodrome17",
        baselines: str = "adam",
        steps: int = 0,
        lrs: str = "",
        seeds: str = "0",
        workers: int = 0,
        reps: int = 2000,
        mlflow_uri: str = "",
        mlflow_experiment: str = "celo-reeval",
    ):
        tracking = dict(
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            mlflow_uri=mlflow_uri,
            mlflow_experiment=mlflow_experiment,
        )
        with dsl.ParallelFor(checkpoints, parallelism=PARALLELISM, name="checkpoints") as ckpt:
            ev = eval_op(
                checkpoint=ckpt,
                baselines=baselines,
                suite=suite,
                steps=steps,
                lrs=lrs,
                seeds=seeds,
                workers=workers,
                reps=reps,
                **tracking,
            )
            configure(ev, target, "compute", hf_token=True)
        table = compare(results=dsl.Collected(ev.outputs["results"]), **tracking)
        table.set_caching_options(False)
        configure(table, target, "light")

    return celo_reeval
