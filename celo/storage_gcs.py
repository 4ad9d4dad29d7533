"""The ``gs://`` backend of :mod:`celo.storage`, on google-cloud-storage.

Paths are ``gs://<bucket>/<object name>``; "folders" are name prefixes ending
in ``/``, as in ``gsutil``. Credentials are the client library's own: inside
GKE, Workload Identity or ``GOOGLE_APPLICATION_CREDENTIALS`` pointing at a
mounted service-account key; in tests, ``STORAGE_EMULATOR_HOST`` (a local
emulator, anonymous credentials).

Writes are atomic for readers: the bytes go to a temporary object next to the
target, are checked (size and CRC32C) against what was sent, and only then
are copied server-side onto the target name and the temporary object deleted.
A reader sees the old object or the complete new one, never a partial one,
whatever upload protocol the client chose and whatever the store underneath;
a writer that dies midway leaves at most a ``.tmp-`` object, which
:func:`list_dir` hides.
"""

from __future__ import annotations

import base64
import os
import threading
import uuid

TMP_PREFIX = ".tmp-"

_lock = threading.Lock()
_clients: dict[tuple, object] = {}


class GcsError(OSError):
    """A GCS call failed for a reason other than a missing object."""


def split(path: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``; the object name may be empty."""
    if not path.startswith("gs://"):
        raise ValueError(f"not a gs:// path: {path!r}")
    bucket, _, name = path[len("gs://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {path!r}")
    return bucket, name


def _client():
    # One client per process and per emulator address. Per process because a
    # client's HTTP session must not be shared across fork (the evaluator
    # forks workers); per emulator address because the library reads
    # STORAGE_EMULATOR_HOST only when a client is built, and tests start
    # emulators on fresh ports.
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    key = (os.getpid(), emulator)
    with _lock:
        if key not in _clients:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage

            if emulator:
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(credentials=AnonymousCredentials(), project="celo-emulator")
            else:
                try:
                    client = storage.Client()
                except DefaultCredentialsError as e:
                    raise GcsError(
                        "no Google Cloud credentials for gs:// paths: set "
                        "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (the "
                        "gcs-credentials secret), or run on GKE with Workload Identity"
                    ) from e
            _clients[key] = client
        return _clients[key]


def _blob(path: str):
    bucket, name = split(path)
    return _client().bucket(bucket).blob(name)


def _reraise(e: Exception, path: str, action: str):
    from google.api_core import exceptions as gexc

    if isinstance(e, gexc.NotFound):
        raise FileNotFoundError(f"{path}: no such object (or the bucket does not exist)") from e
    if isinstance(e, (gexc.Forbidden, gexc.Unauthorized)):
        raise PermissionError(
            f"{path}: permission denied while trying to {action}; check that the pod's service "
            "account (or GOOGLE_APPLICATION_CREDENTIALS) may use this bucket"
        ) from e
    raise GcsError(f"{path}: could not {action}: {e}") from e


def read_bytes(path: str) -> bytes:
    """The whole object at ``path``.

    Raises:
      FileNotFoundError: no object at ``path``.
      PermissionError: the credentials may not read it.
    """
    from google.api_core import exceptions as gexc

    bucket, name = split(path)
    if not name or name.endswith("/"):
        raise FileNotFoundError(f"{path}: is a folder, not an object")
    try:
        return _blob(path).download_as_bytes()
    except gexc.GoogleAPICallError as e:
        _reraise(e, path, "read")


def _crc32c_b64(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode()


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp object, verify, server-side copy)."""
    from google.api_core import exceptions as gexc

    bucket_name, name = split(path)
    if not name or name.endswith("/"):
        raise IsADirectoryError(f"{path}: cannot write an object with a folder name")
    folder, _, base = name.rpartition("/")
    tmp_name = (
        f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}-{base}"
        if folder
        else (f"{TMP_PREFIX}{uuid.uuid4().hex}-{base}")
    )
    bucket = _client().bucket(bucket_name)
    tmp = bucket.blob(tmp_name)
    try:
        # if_generation_match=0: the temporary name must be new, never someone else's object.
        tmp.upload_from_string(
            bytes(data), content_type="application/octet-stream", if_generation_match=0
        )
        tmp.reload()
        if tmp.size != len(data) or tmp.crc32c != _crc32c_b64(data):
            raise GcsError(
                f"{path}: upload check failed (size {tmp.size} for {len(data)} bytes "
                f"sent, crc32c {tmp.crc32c}); the target was left untouched"
            )
        target = bucket.blob(name)
        token, _, _ = target.rewrite(tmp, if_source_generation_match=tmp.generation)
        while token is not None:  # large or cross-class copies take several calls
            token, _, _ = target.rewrite(
                tmp, token=token, if_source_generation_match=tmp.generation
            )
    except gexc.GoogleAPICallError as e:
        _reraise(e, path, "write")
    finally:
        try:
            tmp.delete()
        except gexc.NotFound:
            pass
        except gexc.GoogleAPICallError:
            pass  # a stray .tmp- object is hidden from listings and harmless


def exists(path: str) -> bool:
    """True for an object, a non-empty folder, or (for ``gs://bucket``) the bucket."""
    from google.api_core import exceptions as gexc

    bucket_name, name = split(path)
    client = _client()
    try:
        if not name:
            return client.bucket(bucket_name).exists()
        if not name.endswith("/") and client.bucket(bucket_name).blob(name).exists():
            return True
        prefix = name.rstrip("/") + "/"
        return any(True for _ in client.list_blobs(bucket_name, prefix=prefix, max_results=1))
    except gexc.NotFound:
        return False
    except gexc.GoogleAPICallError as e:
        _reraise(e, path, "check")


def list_dir(path: str) -> list[str]:
    """Sorted names directly under ``path``: objects and sub-folders (no trailing ``/``).

    Temporary objects of writes in progress are left out. A missing folder
    lists as empty, like :func:`celo.storage.list_dir` on a missing local dir.
    """
    from google.api_core import exceptions as gexc

    bucket_name, name = split(path)
    prefix = name.rstrip("/") + "/" if name.strip("/") else ""
    try:
        it = _client().list_blobs(bucket_name, prefix=prefix, delimiter="/")
        names = [b.name[len(prefix) :] for b in it]
        folders = [p[len(prefix) :].rstrip("/") for p in it.prefixes]
    except gexc.NotFound as e:
        raise FileNotFoundError(f"{path}: bucket {bucket_name!r} does not exist") from e
    except gexc.GoogleAPICallError as e:
        _reraise(e, path, "list")
    return sorted({n for n in names + folders if n and not n.startswith(TMP_PREFIX)})


def remove(path: str) -> None:
    """Delete the object at ``path`` (missing is not an error)."""
    from google.api_core import exceptions as gexc

    try:
        _blob(path).delete()
    except gexc.NotFound:
        pass
    except gexc.GoogleAPICallError as e:
        _reraise(e, path, "delete")
