"""manifests/: every file parses, names agree with the pipeline, and kustomize renders.

No cluster is needed (or available): these checks stop at parsing, cross-
checking names against ``pipelines/platform.py`` and the compiled pipelines,
and ``kustomize build`` (or ``kubectl kustomize``) where the tool exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
KINDS = {
    "Kustomization",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "Job",
}
KUSTOMIZATIONS = sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_docs() -> dict[Path, list[dict]]:
    return {p: _docs(p) for p in sorted(MANIFESTS.rglob("*.yaml"))}


def _by_kind(kind: str) -> list[dict]:
    return [d for docs in _all_docs().values() for d in docs if d.get("kind") == kind]


def _one(kind: str, name: str) -> dict:
    found = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} definitions"
    return found[0]


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_every_manifest_parses_with_a_known_kind():
    docs = _all_docs()
    assert len(docs) >= 12
    for path, items in docs.items():
        assert items, f"{path} is empty"
        for d in items:
            assert d.get("kind") in KINDS, f"{path}: kind {d.get('kind')!r}"
            assert d.get("apiVersion"), path
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], path


def test_kustomizations_list_only_existing_files():
    assert {p.relative_to(MANIFESTS).as_posix() for p in KUSTOMIZATIONS} >= {
        "base",
        "reeval",
        "overlays/gke",
        "overlays/gke-keyfile",
        "overlays/cloudsql",
    }
    for k in KUSTOMIZATIONS:
        spec = _docs(k / "kustomization.yaml")[0]
        for res in spec.get("resources", []):
            assert (k / res).exists(), f"{k}: missing resource {res}"
            assert "secrets" not in Path(res).parts, "secret templates must not be applied"


def test_images_are_tagged_with_the_package_version():
    expected = {}
    try:
        from components import images
    except ImportError:
        registry = "ghcr.io/celo-ml"
    else:
        registry = images.REGISTRY
    for k in KUSTOMIZATIONS:
        for entry in _docs(k / "kustomization.yaml")[0].get("images", []):
            expected[entry["name"]] = entry
            assert entry["newTag"] == _version(), f"{k}: {entry}"
            assert entry["newName"] == f"{registry}/{entry['name']}", f"{k}: {entry}"
    assert set(expected) == {"celo-mlflow", "celo-cpu"}


def test_mlflow_server_proxies_artifacts_to_gcs():
    deploy = _one("Deployment", "mlflow")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert any(a.startswith("--artifacts-destination=gs://") for a in args)
    assert not any(a.startswith("--default-artifact-root") for a in args)
    assert "--workers=1" in args and "--host=0.0.0.0" in args
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert deploy["spec"]["strategy"]["type"] == "Recreate"  # one SQLite writer
    claim = deploy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert _one("PersistentVolumeClaim", claim)
    service = _one("Service", "mlflow")
    assert service["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"]
    uri = _one("ConfigMap", "celo-config")["data"]["mlflow_tracking_uri"]
    assert uri == "http://mlflow.kubeflow.svc.cluster.local:5000"


def test_names_shared_with_the_pipeline():
    platform = pytest.importorskip("pipelines.platform")
    config = _one("ConfigMap", platform.CONFIG_MAP)
    assert set(config["data"]) == set(platform.CONFIG_MAP_KEYS)
    hf = _one("Secret", platform.HF_SECRET)
    assert set(hf["stringData"]) == set(platform.HF_SECRET_KEYS)
    gcs = _one("Secret", platform.GCS_SECRET)
    assert set(gcs["stringData"]) == {"key.json"}
    keyfile = _docs(MANIFESTS / "overlays/gke-keyfile/kustomization.yaml")[0]["patches"][0]
    assert f"{platform.GCS_MOUNT}/key.json" in keyfile["patch"]
    rules = _one("Role", "celo-pipeline")["rules"]
    granted = {n for r in rules if "secrets" in r["resources"] for n in r["resourceNames"]}
    assert granted == {platform.HF_SECRET, platform.GCS_SECRET}
    binding = _one("RoleBinding", "celo-pipeline")
    assert (
        binding["subjects"][0]["name"]
        == _one("ServiceAccount", "celo-pipeline")["metadata"]["name"]
    )


def test_secret_templates_hold_placeholders_only():
    secrets = _by_kind("Secret")
    assert len(secrets) == 3
    for s in secrets:
        assert "data" not in s, "base64 data would hide a real value"
        for key, value in s["stringData"].items():
            assert re.fullmatch(r"<[A-Z_]+>", value), f"{s['metadata']['name']}/{key}: {value!r}"


def _node_pools() -> dict:
    text = (MANIFESTS / "node-pools.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)["node_pools"]


def test_node_pool_notes_match_the_pipeline_helper():
    platform = pytest.importorskip("pipelines.platform")
    pools = _node_pools()
    for name, pool in (("gpu", platform.GPU_POOL), ("tpu", platform.TPU_POOL)):
        notes = pools[name]
        assert dict(pool.node_selector) == notes["labels"], name
        assert pool.accelerator == notes["resource"], name
        assert [t["key"] for t in notes["taints"]] == [pool.toleration], name
        assert all(t["effect"] == "NoSchedule" for t in notes["taints"]), name


@pytest.mark.parametrize("name", ["celo_full_gpu.yaml", "celo_full_tpu.yaml", "reeval_gpu.yaml"])
def test_compiled_pipelines_select_the_documented_pools(name):
    path = ROOT / "pipelines" / name
    if not path.exists():
        pytest.skip(f"{name} is not compiled")
    pools = _node_pools()
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 2, "expected the pipeline spec and the kubernetes platform spec"
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    placed = 0
    for exec_name, spec in executors.items():
        labels = spec.get("nodeSelector", {}).get("labels")
        if not labels:
            assert not spec.get("tolerations"), exec_name
            continue
        pool = next((p for p in pools.values() if p["labels"] == labels), None)
        assert pool is not None, f"{exec_name} selects {labels}: no documented pool"
        taint_keys = {t["key"] for t in pool["taints"]}
        tolerated = {(t["key"], t["effect"]) for t in spec.get("tolerations", [])}
        assert {(k, "NoSchedule") for k in taint_keys} <= tolerated, exec_name
        placed += 1
    assert placed >= 1, f"{name} places no stage on an accelerator pool"


def test_recurring_run_definition_is_a_valid_schedule():
    schedule = _one("ConfigMap", "celo-reeval-schedule")["data"]
    fields = schedule["cron"].split()
    assert len(fields) == 6, "KFP cron has six fields, seconds first"
    assert fields[0] == "0"
    assert schedule["experiment"] == "celo-reeval"
    assert all("/" in c for c in schedule["checkpoints"].split(","))
    job = _one("Job", "celo-reeval-schedule")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["pipeline", "schedule"]
    try:
        from celo import cli
    except ImportError:
        return
    if "pipeline" not in cli._available():
        pytest.skip("celo pipeline is not available")
    # The Job's flags must be ones `celo pipeline schedule` accepts (env values substituted).
    filled = [re.sub(r"\$\((\w+)\)", lambda m: schedule[m.group(1)], a) for a in args]
    parsed = cli.build_parser(only="pipeline").parse_args(filled)
    assert parsed.cron == schedule["cron"]


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_kustomize() is None, reason="neither kustomize nor kubectl is installed")
@pytest.mark.parametrize("target", [p.relative_to(MANIFESTS).as_posix() for p in KUSTOMIZATIONS])
def test_kustomize_renders(target):
    out = subprocess.run(
        [*_kustomize(), str(MANIFESTS / target)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds <= KINDS - {"Kustomization", "Secret"}, kinds
    for d in docs:
        assert d["metadata"].get("namespace") == "kubeflow", d["metadata"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "celo"
    images = [
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert all(i.endswith(f":{_version()}") for i in images), images
    if target == "overlays/cloudsql":
        assert "PersistentVolumeClaim" not in kinds
    if target == "overlays/gke-keyfile":
        config = next(
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "celo-config"
        )
        assert config["data"]["google_application_credentials"] == "/var/secrets/gcs/key.json"
