"""The Hugging Face model card of a published checkpoint.

The card is assembled from what the pipeline already wrote: the training
config (the checkpoint's JSON sidecar and/or the trainer's ``config.json``
flag dump) and the evaluation's ``summary.json`` (issue 5's schema: per
optimizer ``iqm_final_loss``/``iqm_speedup`` with 95% CIs and per-task
``final_loss_score``/``speedup_score``). Eval results go into the card's
``model-index`` through ``huggingface_hub.EvalResult`` so the Hub (and
``ModelCard.load``) can read them back. Nothing here touches the network,
and the output depends only on the inputs, so re-publishing the same
checkpoint and results produces the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from celo import checkpoints, storage

TASK_TYPE = "optimization"
TASK_NAME = "Learned optimizer evaluation (scores vs learning-rate-tuned Adam)"


def training_config(checkpoint: str) -> dict[str, Any]:
    """The training config of ``checkpoint``: its sidecar's config, overlaid by a
    ``config.json`` in the same folder (the trainer's flag dump), plus ``optimizer``."""
    side = checkpoints.read_sidecar(checkpoint) or {}
    config: dict[str, Any] = dict(side.get("config") or {})
    folder = checkpoint.rsplit("/", 1)[0] if "/" in checkpoint else "."
    flag_dump = storage.join(folder, "config.json")
    if storage.exists(flag_dump):
        config.update(json.loads(storage.read_bytes(flag_dump)))
    if side.get("optimizer") and "optimizer" not in config:
        config["optimizer"] = side["optimizer"]
    return config


def load_summary(results: str) -> dict[str, Any]:
    """``<results>/summary.json`` written by ``celo evaluate``."""
    path = storage.join(results, "summary.json")
    if not storage.exists(path):
        raise FileNotFoundError(
            f"{path}: no evaluation summary (run `celo evaluate --output "
            f"{results}` first, or publish without --results)"
        )
    return json.loads(storage.read_bytes(path))


def _same_path(a: str | None, b: str) -> bool:
    if not a:
        return False
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def select_label(summary: Mapping[str, Any], checkpoint: str, label: str | None = None) -> str:
    """Which optimizer of ``summary`` is the checkpoint being published.

    ``label`` if given; else the entry evaluated from this checkpoint file;
    else the only learned entry (one with a checkpoint).
    """
    opts = summary["optimizers"]
    if label is not None:
        if label not in opts:
            raise KeyError(f"label {label!r} not in the evaluation; it has {sorted(opts)}")
        return label
    same = [k for k, o in opts.items() if _same_path(o.get("checkpoint"), checkpoint)]
    learned = [k for k, o in opts.items() if o.get("checkpoint")]
    for candidates in (same, learned):
        if len(candidates) == 1:
            return candidates[0]
    raise KeyError(
        f"cannot tell which evaluated optimizer is {checkpoint}: candidates "
        f"{same or learned or sorted(opts)}; pass --label"
    )


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(entry: Mapping[str, Any], key: str) -> str:
    ci = entry.get(f"{key}_ci")
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "–"


def eval_results(summary: Mapping[str, Any], label: str):
    """``EvalResult``s for the card's model-index: the IQMs, then per-task scores."""
    from huggingface_hub import EvalResult

    entry = summary["optimizers"][label]
    suite = summary.get("config", {}).get("suite") or "custom"
    n = len(summary.get("tasks_aggregated", []))
    out = []
    for key, title in (
        ("iqm_final_loss", "IQM final-loss score"),
        ("iqm_speedup", "IQM speedup score"),
    ):
        if entry.get(key) is not None:
            out.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=suite,
                    dataset_name=f"{suite} ({n} tasks, IQM)",
                    metric_type=key,
                    metric_name=f"{title} (95% CI {_ci(entry, key)})",
                    metric_value=round(float(entry[key]), 6),
                )
            )
    for task, t in entry.get("per_task", {}).items():
        for key in ("final_loss_score", "speedup_score"):
            if t.get(key) is not None:
                out.append(
                    EvalResult(
                        task_type=TASK_TYPE,
                        task_name=TASK_NAME,
                        dataset_type=task,
                        dataset_name=task,
                        metric_type=key,
                        metric_name=key.replace("_", " "),
                        metric_value=round(float(t[key]), 6),
                    )
                )
    return out


def substitutions(eval_tasks: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """``(use, task, original data, our data)`` for every task that trains on substitute data."""
    try:
        from celo.tasks.suites import get_suite_tasks
    except ImportError:  # a slim install without the task suites
        return []
    rows = [
        ("meta-training", t.name, t.original_data, t.data)
        for t in get_suite_tasks("fast_velo")
        if t.original_data
    ]
    known = {t.name: t for t in get_suite_tasks("velodrome17")}
    rows += [
        ("evaluation", name, known[name].original_data, known[name].data)
        for name in eval_tasks
        if name in known and known[name].original_data
    ]
    return rows


def _usage(repo_id: str, optimizer: str) -> str:
    return f"""```python
from celo.hub import load_optimizer

opt = load_optimizer("{repo_id}", optimizer="{optimizer}")  # downloads theta.state
state = opt.init(params, num_steps=1000)
for batch in batches:
    loss, grads = jax.value_and_grad(loss_fn)(opt.get_params(state), batch)
    state = opt.update(state, grads, loss=loss)
```

or, with `huggingface_hub` directly:

```python
from huggingface_hub import hf_hub_download
from celo.factory import get_optimizer
from celo.utils import init_lopt_from_ckpt

path = hf_hub_download("{repo_id}", filename="theta.state")
opt = init_lopt_from_ckpt(get_optimizer("{optimizer}"), path)
```"""


def _recipe(config: Mapping[str, Any]) -> str:
    if not config:
        return "No training config was recorded with this checkpoint."
    rows = ["| setting | value |", "|---|---|"]
    for k in sorted(config):
        v = config[k]
        text = json.dumps(v) if not isinstance(v, str) else v
        rows.append(f"| `{k}` | `{text if len(text) <= 80 else text[:77] + '...'}` |")
    return "The full config is `config.json` in this repository.\n\n" + "\n".join(rows)


def _evaluation(summary: Mapping[str, Any], label: str) -> str:
    entry = summary["optimizers"][label]
    cfg = summary.get("config", {})
    ref = summary.get("reference", "adam")
    steps = cfg.get("steps")
    if isinstance(steps, dict) and steps:
        lo, hi = min(steps.values()), max(steps.values())
        steps_text = str(lo) if lo == hi else f"{lo}–{hi}"
    else:
        steps_text = str(steps)
    lines = [
        f"Scores against learning-rate-tuned `{ref}` (above 1 beats it), from `celo evaluate` "
        f"on suite `{cfg.get('suite') or 'custom'}`, seeds {cfg.get('seeds')}, {steps_text} "
        f"steps per task. The final-loss score is {ref}'s final loss over ours; the speedup "
        f"score is the horizon over the first step where our smoothed loss reaches {ref}'s "
        "final loss (0 if never). Aggregates are interquartile means with stratified-bootstrap "
        f"95% CIs over the {len(summary.get('tasks_aggregated', []))} tasks every optimizer "
        "finished. The whole summary is `eval/summary.json`.",
        "",
        "| aggregate | value | 95% CI |",
        "|---|---|---|",
    ]
    for key in ("iqm_final_loss", "iqm_speedup", "median_final_loss", "median_speedup"):
        if key in entry:
            lines.append(f"| {key.replace('_', ' ')} | {_fmt(entry[key])} | {_ci(entry, key)} |")
    lines += ["", "| task | final-loss score | speedup score | final loss |", "|---|---|---|---|"]
    for task, t in entry.get("per_task", {}).items():
        lines.append(
            f"| `{task}` | {_fmt(t.get('final_loss_score'))} | "
            f"{_fmt(t.get('speedup_score'))} | {_fmt(t.get('final_loss'))} |"
        )
    missing = summary.get("tasks_missing") or []
    if missing:
        lines += ["", "Not finished, so not aggregated: " + ", ".join(f"`{m}`" for m in missing)]
    return "\n".join(lines)


def render(
    repo_id: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    label: str | None = None,
    plots: Sequence[str] = (),
    optimizer: str | None = None,
):
    """The ``huggingface_hub.ModelCard`` (YAML metadata + markdown body).

    Args:
      repo_id: ``org/name`` the card is for.
      config: training config (see :func:`training_config`).
      summary: evaluation ``summary.json``, or None when not evaluated.
      label: the optimizer of ``summary`` this checkpoint is.
      plots: repository paths of PNG plots to show.
      optimizer: registry name for the usage code; default: the config's
        ``optimizer``, else the evaluated optimizer's name, else the repo name.
    """
    from huggingface_hub import ModelCard, ModelCardData

    name = repo_id.split("/")[-1]
    evaluated = summary["optimizers"][label].get("name") if summary and label else None
    optimizer = str(optimizer or config.get("optimizer") or evaluated or name)
    data = ModelCardData(
        license="mit",
        library_name="celo",
        model_name=name,
        tags=["learned-optimizer", "meta-learning", "jax", "optax", "celo"],
        eval_results=(eval_results(summary, label) or None) if summary else None,
    )
    eval_tasks = list(summary.get("tasks", [])) if summary else []
    subs = substitutions(eval_tasks)
    sections = [
        f"# {name}",
        f"A learned optimizer (`{optimizer}`) meta-trained with the `celo` package, an open "
        "JAX/optax implementation of Celo (Moudgil et al., *Celo: Training Versatile Learned "
        "Optimizers on a Compute Diet*, arXiv 2501.12670). `theta.state` holds the "
        "meta-parameters as flax msgpack (never pickle), in the layout of the original release.",
        "## Usage",
        _usage(repo_id, optimizer),
        "## Training recipe",
        _recipe(config),
        "## Evaluation",
        _evaluation(summary, label)
        if summary
        else "This checkpoint was published without evaluation results.",
    ]
    if plots:
        sections += ["## Plots", "\n\n".join(f"![{os.path.basename(p)[:-4]}]({p})" for p in plots)]
    sections += ["## Data substitutions"]
    if subs:
        rows = ["| used for | task | original data | data here |", "|---|---|---|---|"]
        rows += [f"| {u} | `{t}` | {o} | {d} |" for u, t, o, d in subs]
        sections.append(
            "Some data sets of the original tasks are not available offline; these "
            "tasks keep their models, batch shapes and normalisers and train on the "
            "nearest available data:\n\n" + "\n".join(rows)
        )
    else:
        sections.append("None recorded.")
    body = "\n\n".join(sections) + "\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
