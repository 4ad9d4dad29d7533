"""The full Celo pipeline: phase 1 → phase 2 → {evaluate, AlgoPerf-lite} → publish.

Compile with ``make pipelines`` (``python -m pipelines.compile``); submit with
``kfp run submit -e celo -f pipelines/celo_full.yaml key=value …`` or
``celo pipeline submit``; run on this machine with
``celo pipeline run --local --preset smoke``.
"""

from kfp import dsl

from components.algoperf_eval import algoperf_eval
from components.evaluate import evaluate
from components.images import for_target
from components.meta_train import meta_train
from components.publish import publish as publish_op
from pipelines.platform import configure


def build(target: str = "cpu"):
    """The pipeline function with its compute stages placed for ``target``."""
    train_op = for_target(meta_train, target)
    eval_op = for_target(evaluate, target)
    algoperf_op = for_target(algoperf_eval, target)

    @dsl.pipeline(
        name="celo-full",
        description="Meta-train Celo in two phases, evaluate it "
        "on the task suite and AlgoPerf-lite, and optionally publish it.",
    )
    def celo_full(
        phase1_preset: str = "phase1",
        phase1_seed: int = 0,
        phase2_preset: str = "phase2",
        phase2_seed: int = 0,
        eval_suite: str = "velodrome17",
        eval_baselines: str = "adam",
        eval_steps: int = 0,
        eval_lrs: str = "",
        eval_seeds: str = "0",
        eval_workers: int = 0,
        eval_reps: int = 2000,
        algoperf_workloads: str = "",
        algoperf_max_steps: int = 0,
        algoperf_baselines: str = "adam",
        publish: bool = False,
        publish_repo_id: str = "",
        publish_dry_run: bool = False,
        register_model: str = "celo",
        model_alias: str = "candidate",
        mlflow_uri: str = "",
        mlflow_experiment: str = "celo",
    ):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        tracking = dict(
            pipeline_run_id=run_id, mlflow_uri=mlflow_uri, mlflow_experiment=mlflow_experiment
        )
        phase1 = train_op(phase=1, preset=phase1_preset, seed=phase1_seed, **tracking)
        phase1.set_display_name("meta-train phase 1")
        phase2 = train_op(
            phase=2,
            preset=phase2_preset,
            seed=phase2_seed,
            init_theta=phase1.outputs["theta"],
            register_model=register_model,
            model_alias=model_alias,
            **tracking,
        )
        phase2.set_display_name("meta-train phase 2")
        theta = phase2.outputs["theta"]
        scores = eval_op(
            theta=theta,
            baselines=eval_baselines,
            suite=eval_suite,
            steps=eval_steps,
            lrs=eval_lrs,
            seeds=eval_seeds,
            workers=eval_workers,
            reps=eval_reps,
            **tracking,
        )
        algoperf = algoperf_op(
            theta=theta,
            baselines=algoperf_baselines,
            workloads=algoperf_workloads,
            max_steps=algoperf_max_steps,
            **tracking,
        )
        for task in (phase1, phase2, scores, algoperf):
            configure(task, target, "compute")
        with dsl.If(publish == True, name="publish-enabled"):  # noqa: E712 - a DSL condition
            release = publish_op(
                theta=theta,
                results=scores.outputs["results"],
                repo_id=publish_repo_id,
                dry_run=publish_dry_run,
                **tracking,
            )
            release.after(algoperf).set_caching_options(False)
            configure(release, target, "light", hf_token=True)

    return celo_full
