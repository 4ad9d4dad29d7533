"""Compiled pipelines: drift, strict IR parse, load-back, DAG shape, node pools and secrets."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("kfp")
yaml = pytest.importorskip("yaml")

from google.protobuf import json_format  # noqa: E402
from kfp.components import load_component_from_file  # noqa: E402
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2  # noqa: E402
from kfp.pipeline_spec import pipeline_spec_pb2  # noqa: E402

from pipelines import compile as pcompile  # noqa: E402
from pipelines import platform  # noqa: E402

HERE = os.path.dirname(pcompile.__file__)
FILES = sorted(pcompile.OUTPUTS)
COMPUTE = {
    "celo_full": ["exec-meta-train", "exec-meta-train-2", "exec-evaluate", "exec-algoperf-eval"],
    "reeval": ["exec-evaluate-checkpoint"],
}
LIGHT = {"celo_full": ["exec-publish"], "reeval": ["exec-compare"]}
TOKEN = "hf_pipelineTestToken0123456789"


def _docs(name: str) -> list[dict]:
    with open(os.path.join(HERE, name)) as f:
        return list(yaml.safe_load_all(f))


def _executors(name: str):
    spec, platform_doc = _docs(name)
    deploy = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(spec["deploymentSpec"], deploy, ignore_unknown_fields=False)
    k8s = {}
    for exe, cfg in platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        k8s[exe] = json_format.ParseDict(
            cfg, k8s_pb2.KubernetesExecutorConfig(), ignore_unknown_fields=False
        )
    return deploy.executors, k8s


def test_committed_yaml_matches_a_fresh_compile():
    assert pcompile.drifted() == [], "run `make pipelines` and commit the YAML"


def test_drift_is_detected(tmp_path):
    pcompile.compile_to(str(tmp_path), "cpu")
    path = tmp_path / "reeval.yaml"
    text = path.read_text()
    # only the SDK version is normalised away
    path.write_text(re.sub(r"sdkVersion: kfp-\S+", "sdkVersion: kfp-9.9.9", text))
    assert pcompile.drifted("cpu", str(tmp_path)) == []
    path.write_text(text.replace("velodrome17", "velodrome18", 1))
    assert pcompile.drifted("cpu", str(tmp_path)) == ["reeval.yaml"]


@pytest.mark.parametrize("name", FILES)
def test_strict_parse_against_the_protos_and_load_back(name):
    spec, platform_doc = _docs(name)
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    json_format.ParseDict(
        platform_doc, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False
    )
    _executors(name)
    component = load_component_from_file(os.path.join(HERE, name))
    assert component.name in ("celo-full", "celo-reeval")


def test_a_misspelled_field_fails_the_strict_parse():
    spec, _ = _docs("celo_full.yaml")
    spec["deploymentSpecc"] = spec.pop("deploymentSpec")
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)


def test_full_pipeline_dag_and_parameters():
    spec, _ = _docs("celo_full.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    deps = {k: sorted(v.get("dependentTasks", [])) for k, v in tasks.items()}
    assert deps == {
        "meta-train": [],
        "meta-train-2": ["meta-train"],
        "evaluate": ["meta-train-2"],
        "algoperf-eval": ["meta-train-2"],
        "condition-1": ["algoperf-eval", "evaluate", "meta-train-2"],
    }
    # phase 2 starts from phase 1's theta; both run the one meta_train component
    p2 = tasks["meta-train-2"]["inputs"]
    assert p2["artifacts"]["init_theta"]["taskOutputArtifact"] == {
        "outputArtifactKey": "theta",
        "producerTask": "meta-train",
    }
    assert p2["parameters"]["phase"]["runtimeValue"]["constant"] == 2
    assert tasks["meta-train"]["inputs"]["parameters"]["phase"]["runtimeValue"]["constant"] == 1
    comps = spec["components"]
    assert (
        comps["comp-meta-train"]["executorLabel"],
        comps["comp-meta-train-2"]["executorLabel"],
    ) == ("exec-meta-train", "exec-meta-train-2")
    code = spec["deploymentSpec"]["executors"]
    assert (
        code["exec-meta-train"]["container"]["command"]
        == code["exec-meta-train-2"]["container"]["command"]
    )
    # publish is off by default, behind dsl.If, and never cached
    assert (
        tasks["condition-1"]["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--publish'] == true"
    )
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["publish"] == {
        "defaultValue": False,
        "isOptional": True,
        "parameterType": "BOOLEAN",
    }
    publish_task = comps["comp-condition-1"]["dag"]["tasks"]["publish"]
    assert publish_task["cachingOptions"] == {}
    # stage parameters carry their stage's prefix
    stage_params = set(params) - {
        "publish",
        "register_model",
        "model_alias",
        "mlflow_uri",
        "mlflow_experiment",
    }
    assert all(re.match(r"(phase1|phase2|eval|algoperf|publish)_", p) for p in stage_params)
    # every stage reports to the same MLflow parent: the KFP run id
    for t in ("meta-train", "meta-train-2", "evaluate", "algoperf-eval"):
        assert tasks[t]["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"] == {
            "constant": "{{$.pipeline_job_uuid}}"
        }


def test_reeval_fans_out_and_collects():
    spec, _ = _docs("reeval.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    loop = tasks["for-loop-1"]
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--checkpoints"}
    assert loop["iteratorPolicy"] == {"parallelismLimit": 4}
    assert tasks["compare"]["dependentTasks"] == ["for-loop-1"]
    assert (
        tasks["compare"]["inputs"]["artifacts"]["results"]["taskOutputArtifact"]["producerTask"]
        == "for-loop-1"
    )
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["checkpoints"]["parameterType"] == "LIST"
    assert params["mlflow_experiment"]["defaultValue"] == "celo-reeval"


@pytest.mark.parametrize("name", FILES)
def test_node_pools_and_secrets(name):
    target = "tpu" if "tpu" in name else "gpu" if "gpu" in name else "cpu"
    kind = name.split("_gpu")[0].split("_tpu")[0].removesuffix(".yaml")
    executors, k8s = _executors(name)
    for exe in COMPUTE[kind] + LIGHT[kind]:
        pool = platform.POOLS[(target, "compute" if exe in COMPUTE[kind] else "light")]
        container = executors[exe].container
        res, cfg = container.resources, k8s[exe]
        assert res.resource_cpu_request == pool.cpu and res.resource_memory_request == pool.memory
        assert res.accelerator.resource_type == (pool.accelerator or "")
        assert res.accelerator.resource_count == (
            str(pool.accelerator_count) if pool.accelerator else ""
        )
        assert dict(cfg.node_selector.labels) == dict(pool.node_selector)
        assert [(t.key, t.operator, t.effect) for t in cfg.tolerations] == (
            [(pool.toleration, "Exists", "NoSchedule")] if pool.toleration else []
        )
        expected_image = {"cpu": "celo-cpu", "gpu": "celo-cuda", "tpu": "celo-tpu"}[
            target if exe in COMPUTE[kind] else "cpu"
        ]
        assert f"/{expected_image}:" in container.image
        # secrets come from Kubernetes objects by name; nothing secret is in the spec
        assert [s.secret_name for s in cfg.secret_as_volume] == [platform.GCS_SECRET]
        hf = [
            (s.secret_name, [(k.secret_key, k.env_var) for k in s.key_to_env])
            for s in cfg.secret_as_env
        ]
        wants_hf = exe in ("exec-publish", "exec-evaluate-checkpoint")
        assert hf == ([(platform.HF_SECRET, [("token", "HF_TOKEN")])] if wants_hf else [])
        assert not any(e.name == "HF_TOKEN" for e in container.env)
    if target != "cpu":
        assert any(k8s[e].tolerations for e in COMPUTE[kind])


def test_compiled_yaml_holds_no_secret_values(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/home/me/very-secret-key.json")
    for path in pcompile.compile_to(str(tmp_path)):
        text = open(path).read()
        assert TOKEN not in text and "very-secret-key" not in text
    for name in FILES:
        text = open(os.path.join(HERE, name)).read()
        assert not re.search(r"hf_[A-Za-z0-9]{20,}", text)
        assert "private_key" not in text


def test_celo_pipeline_compile_check(monkeypatch):
    from celo import cli

    monkeypatch.chdir(os.path.dirname(HERE))
    assert cli.main(["pipeline", "compile", "--check"]) == 0
