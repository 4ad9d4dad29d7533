"""celo.storage on gs:// paths, against gcp-storage-emulator started by the tests.

The emulator does not enforce generation preconditions, so nothing here
relies on them; atomicity is checked from a reader's point of view.
"""

from __future__ import annotations

import threading

import jax
import numpy as np
import pytest

pytest.importorskip("google.cloud.storage")

from celo import checkpoints, storage, storage_gcs  # noqa: E402
from tests.conftest import CHECKPOINTS, FIXTURES  # noqa: E402
from tests.fakes.gcs_emulator import GcsEmulator  # noqa: E402

pytestmark = pytest.mark.integration

BUCKET = "celo-test"


@pytest.fixture(scope="module")
def emulator():
    with GcsEmulator(BUCKET) as gcs:
        yield gcs


@pytest.fixture
def root(emulator, monkeypatch, request):
    """A fresh ``gs://`` folder per test, with the emulator in the environment."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    return f"gs://{BUCKET}/{request.node.name}"


def test_round_trip_and_overwrite(root):
    path = storage.join(root, "a", "blob.bin")
    assert path == f"{root}/a/blob.bin"
    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 7)
    storage.write_bytes(path, data)
    assert storage.read_bytes(path) == data
    storage.write_bytes(path, b"second")
    assert storage.read_bytes(path) == b"second"
    storage.write_bytes(path, b"")
    assert storage.read_bytes(path) == b""


def test_large_object_uses_resumable_upload_and_round_trips(root):
    # Above 8 MiB google-cloud-storage switches to a resumable upload.
    data = np.random.default_rng(1).bytes(9 * 1024 * 1024)
    path = f"{root}/big.bin"
    storage.write_bytes(path, data)
    assert storage.read_bytes(path) == data
    assert storage.list_dir(root) == ["big.bin"]


def test_listing_and_exists(root):
    for name in ("x/1.state", "x/2.state", "x/sub/3.state", "y.json"):
        storage.write_bytes(f"{root}/{name}", name.encode())
    assert storage.list_dir(root) == ["x", "y.json"]
    assert storage.list_dir(f"{root}/x") == ["1.state", "2.state", "sub"]
    assert storage.list_dir(f"{root}/x/") == ["1.state", "2.state", "sub"]
    assert storage.list_dir(f"{root}/missing") == []
    assert storage.exists(f"{root}/x/1.state")
    assert storage.exists(f"{root}/x")  # a folder exists when something is under it
    assert storage.exists(f"gs://{BUCKET}")
    assert not storage.exists(f"{root}/x/9.state")
    assert not storage.exists(f"{root}/x/su")  # a name prefix is not a folder
    assert not storage.exists("gs://no-such-bucket/a")


def test_missing_object_and_bucket_raise_clear_errors(root):
    with pytest.raises(FileNotFoundError, match=r"gs://celo-test/.*/nope\.state: no such object"):
        storage.read_bytes(f"{root}/nope.state")
    with pytest.raises(FileNotFoundError, match="no-such-bucket"):
        storage.read_bytes("gs://no-such-bucket/theta.state")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.list_dir("gs://no-such-bucket/x")
    with pytest.raises(FileNotFoundError, match="folder"):
        storage.read_bytes(f"{root}/")
    with pytest.raises(ValueError, match="no bucket"):
        storage.read_bytes("gs:///x")
    with pytest.raises(ValueError, match="unsupported storage scheme 's3'"):
        storage.read_bytes("s3://b/x")


def test_failed_write_leaves_old_object_and_no_temp(root, monkeypatch):
    path = f"{root}/theta.state"
    storage.write_bytes(path, b"old contents")

    from google.cloud.storage import Blob

    real_upload = Blob.upload_from_string

    def truncated_upload(self, data, *args, **kwargs):  # the network cut the body short
        return real_upload(self, data[: len(data) // 2], *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Blob, "upload_from_string", truncated_upload)
        with pytest.raises(storage_gcs.GcsError, match="upload check failed"):
            storage.write_bytes(path, b"new contents that never fully arrive")
    assert storage.read_bytes(path) == b"old contents"

    def dies_before_copy(self, *args, **kwargs):
        raise KeyboardInterrupt  # the pod is killed between upload and copy

    with monkeypatch.context() as m:
        m.setattr(Blob, "rewrite", dies_before_copy)
        with pytest.raises(KeyboardInterrupt):
            storage.write_bytes(path, b"new contents")
    assert storage.read_bytes(path) == b"old contents"
    # Nothing left behind, not even hidden temporary objects.
    client = storage_gcs._client()
    prefix = root[len(f"gs://{BUCKET}/") :] + "/"
    assert [b.name for b in client.list_blobs(BUCKET, prefix=prefix)] == [prefix + "theta.state"]


def test_hidden_temp_objects_are_not_listed(root):
    storage.write_bytes(f"{root}/.tmp-leftover-theta.state", b"x")  # as after a crash
    storage.write_bytes(f"{root}/theta.state", b"y")
    assert storage.list_dir(root) == ["theta.state"]


def test_reader_never_sees_a_partial_object(root):
    path = f"{root}/theta.state"
    versions = [bytes([i]) * (1024 * 1024) for i in (1, 2)]
    storage.write_bytes(path, versions[0])
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(storage.read_bytes(path))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(6):
            storage.write_bytes(path, versions[i % 2])
    finally:
        stop.set()
        t.join()
    assert seen, "reader never ran"
    assert all(s in versions for s in seen), {len(s) for s in seen}


def test_checkpoint_save_and_load_on_gcs(root):
    src = str(CHECKPOINTS / "celo" / "theta.state")
    template = checkpoints.load_raw(src)  # the released layout, without building the optimizer
    theta = checkpoints.load_state(src, template)
    path = f"{root}/train/exp/theta.state"
    checkpoints.save_state(path, theta, optimizer_name="celo", config={"outer_lr": 1e-4})
    # Byte-identical to the released file: the gs:// path changes nothing in the format.
    assert storage.read_bytes(path) == open(src, "rb").read()
    back = checkpoints.load_state(path, template)
    for a, b in zip(jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    side = checkpoints.read_sidecar(path)
    assert side["optimizer"] == "celo" and side["config"] == {"outer_lr": 1e-4}
    assert checkpoints.read_sidecar(f"{root}/train/exp/missing.state") is None
    assert storage.list_dir(f"{root}/train/exp") == ["theta.state", "theta.state.json"]
    with pytest.raises(FileNotFoundError):
        checkpoints.load_state(f"{root}/train/exp/theta_9.state", template)


def test_mlflow_artifacts_on_the_same_bucket(root, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        exp_id = mlflow.create_experiment("celo-gcs", artifact_location=f"{root}/mlflow")
        (tmp_path / "curve.json").write_text('{"loss": [3, 2, 1]}')
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_artifact(str(tmp_path / "curve.json"), artifact_path="curves")
        assert run.info.artifact_uri.startswith(f"{root}/mlflow/")
        listed = storage.list_dir(f"{run.info.artifact_uri}/curves")
        assert listed == ["curve.json"]
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="curves/curve.json", dst_path=str(tmp_path / "dl")
        )
        assert open(local).read() == '{"loss": [3, 2, 1]}'
    finally:
        mlflow.set_tracking_uri(None)


def test_publish_reads_and_writes_gcs(root, capsys):
    from celo import cli

    ckpt = f"{root}/train/theta.state"
    theta = checkpoints.load_raw(str(CHECKPOINTS / "celo" / "theta.state"))
    checkpoints.save_state(ckpt, theta, optimizer_name="celo", config={"outer_lr": 3e-4})
    summary = (FIXTURES / "eval_summary" / "summary.json").read_text()
    storage.write_bytes(f"{root}/eval/summary.json", summary.replace("CHECKPOINT", ckpt).encode())
    storage.write_bytes(f"{root}/eval/plots/iqm.png", b"\x89PNG\r\n\x1a\n")
    argv = [
        "publish",
        "--checkpoint",
        ckpt,
        "--results",
        f"{root}/eval",
        "--repo-id",
        "o/n",
        "--dry-run",
        "--out",
        f"{root}/card",
    ]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert storage.list_dir(f"{root}/card") == [
        "README.md",
        "config.json",
        "eval",
        "plots",
        "theta.state",
    ]
    assert storage.read_bytes(f"{root}/card/theta.state") == storage.read_bytes(ckpt)
    assert b"![iqm](plots/iqm.png)" in storage.read_bytes(f"{root}/card/README.md")


def test_mlflow_tracker_logs_a_gs_checkpoint_and_registers_it(root, tmp_path):
    """A stage whose experiment root is gs:// still gets its checkpoint into MLflow."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from celo.tracking_mlflow import MlflowTracker

    ckpt = f"{root}/train/theta.state"
    data = (CHECKPOINTS / "celo" / "theta.state").read_bytes()
    storage.write_bytes(ckpt, data)
    storage.write_bytes(f"{root}/train/plots/a.png", b"png-a")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(
        uri,
        experiment="celo-gcs-art",
        stage="train",
        register_model="celo-gcs",
        model_alias="candidate",
    )
    tracker.log_params({"outer_lr": 3e-4})
    tracker.log_artifact(ckpt, "checkpoint")
    tracker.log_artifact(f"{root}/train/plots", "plots")
    tracker.close("FINISHED")
    client = MlflowClient(uri)
    names = {f.path for f in client.list_artifacts(tracker.run_id, "checkpoint")}
    assert names == {"checkpoint/theta.state"}
    assert {f.path for f in client.list_artifacts(tracker.run_id, "plots")} == {"plots/a.png"}
    local = client.download_artifacts(tracker.run_id, "checkpoint/theta.state", str(tmp_path))
    assert open(local, "rb").read() == data
    assert client.get_model_version_by_alias("celo-gcs", "candidate").run_id == tracker.run_id
