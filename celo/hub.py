"""Hugging Face Hub access: download released checkpoints, publish new ones.

``download("amoudgl/celo")`` wraps ``huggingface_hub.hf_hub_download``: files are
cached in the standard HF cache, ``HF_HUB_OFFLINE=1`` serves from the cache
only, and ``HF_ENDPOINT`` points at another Hub (a mirror, or a test fake).
``huggingface_hub`` is imported lazily so that library users who never touch
the Hub do not pay for it.

Publishing is two steps: :func:`assemble` builds the repository contents
(``theta.state``, ``config.json``, the model card of :mod:`celo.model_card`,
evaluation summary and plots) without any network, and :func:`publish`
creates the repo if needed and commits them, making no commit when nothing
changed. The token is an argument; reading it from the environment or a
mounted secret is the CLI's job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from celo import storage
from celo.optimizers.base import Optimizer

#: Released repositories of the original authors (spec §13) → optimizer names.
RELEASED_REPOS: dict[str, str] = {
    "amoudgl/celo": "celo",
    "amoudgl/celo-adam": "celo_adam",
    "amoudgl/rnn-mlp-lopt": "rnn_mlp",
    "amoudgl/adafac-mlp-lopt": "adafac_mlp",
    "amoudgl/velo-s": "velo_s",
    "amoudgl/velo-4000": "velo_4000",
    "amoudgl/celo2": "celo2",
    "amoudgl/celo2-base": "celo2base",
}


class HubError(RuntimeError):
    """A Hub download or upload failed; the message says what and where."""


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE only once, at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def download(
    repo_id: str,
    filename: str = "theta.state",
    revision: str | None = None,
    cache_dir: str | None = None,
    local_dir: str | None = None,
    token: str | None = None,
) -> str:
    """Download one file of a Hub model repo and return its local path."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        return huggingface_hub.hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            token=token,
            endpoint=_endpoint(),
            local_files_only=_offline(),
        )
    except errors.LocalEntryNotFoundError as e:
        raise HubError(
            f"{repo_id}/{filename} is not in the local cache and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network)"
        ) from e
    except errors.RepositoryNotFoundError as e:
        raise HubError(f"Hub repository {repo_id!r} not found (or not accessible)") from e
    except errors.EntryNotFoundError as e:
        raise HubError(f"{filename!r} not found in Hub repository {repo_id!r}") from e


def optimizer_name_for_repo(repo_id: str) -> str:
    """The registry name of a Hub repo: the released table, else the repo's base name."""
    from celo.optimizers.registry import canonical_name

    return RELEASED_REPOS.get(repo_id) or canonical_name(repo_id.split("/")[-1])


def load_optimizer(repo_id: str, optimizer: str | None = None, **download_kwargs) -> Optimizer:
    """Download ``theta.state`` from ``repo_id`` and bind it to its learned optimizer."""
    from celo.factory import get_optimizer
    from celo.utils import init_lopt_from_ckpt

    name = optimizer or optimizer_name_for_repo(repo_id)
    path = download(repo_id, **download_kwargs)
    return init_lopt_from_ckpt(get_optimizer(name), path)


# ---------------------------------------------------------------- publishing


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` did: ``changed`` is False when the Hub already had these files."""

    repo_id: str
    url: str
    commit: str | None
    changed: bool
    files: tuple[str, ...]


def assemble(
    checkpoint: str, repo_id: str, results: str | None = None, label: str | None = None
) -> dict[str, bytes]:
    """The repository contents for ``checkpoint``: ``{path in repo: bytes}``.

    ``theta.state``, ``config.json`` (training config), ``README.md`` (model
    card) and, with ``results``, ``eval/summary.json``, ``eval/tables.md`` and
    ``plots/*.png``. Paths may be local or ``gs://``.
    """
    from celo import model_card

    if not storage.exists(checkpoint):
        raise HubError(f"checkpoint {checkpoint} does not exist")
    config = model_card.training_config(checkpoint)
    files = {
        "theta.state": storage.read_bytes(checkpoint),
        "config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
    }
    summary, chosen, plots = None, None, []
    if results is not None:
        summary = model_card.load_summary(results)
        chosen = model_card.select_label(summary, checkpoint, label)
        files["eval/summary.json"] = storage.read_bytes(storage.join(results, "summary.json"))
        tables = storage.join(results, "tables.md")
        if storage.exists(tables):
            files["eval/tables.md"] = storage.read_bytes(tables)
        plot_dir = storage.join(results, "plots")
        for name in storage.list_dir(plot_dir):
            if name.endswith(".png"):
                files[f"plots/{name}"] = storage.read_bytes(storage.join(plot_dir, name))
                plots.append(f"plots/{name}")
    card = model_card.render(repo_id, config, summary, chosen, plots)
    files["README.md"] = str(card).encode()
    return dict(sorted(files.items()))


def write_folder(files: dict[str, bytes], out: str) -> list[str]:
    """Write ``files`` under ``out`` (local or ``gs://``); returns the paths written."""
    written = []
    for rel, data in files.items():
        path = storage.join(out, *rel.split("/"))
        storage.write_bytes(path, data)
        written.append(path)
    return written


def _raise_for_auth(e: Exception, repo_id: str, action: str) -> None:
    # Our message names the repo and the fix; the token itself is never part of it.
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        raise HubError(
            f"the Hub rejected the token (HTTP 401 Unauthorized) while trying to {action} "
            f"{repo_id!r}: set HF_TOKEN or the mounted token file to a valid token"
        ) from None
    if status == 403:
        raise HubError(
            f"the token may not {action} {repo_id!r} (HTTP 403 Forbidden): it needs write "
            "access to that namespace"
        ) from None
    raise HubError(f"could not {action} {repo_id!r}: {e}") from None


def publish(
    files: dict[str, bytes],
    repo_id: str,
    token: str,
    private: bool = False,
    commit_message: str | None = None,
) -> PublishResult:
    """Create ``repo_id`` if missing and commit ``files`` to its ``main`` branch.

    Idempotent: the Hub reports the blob ids it holds, and files that did not
    change are not sent; when none changed, no commit is made and
    ``changed`` is False.

    Raises:
      HubError: authentication or permission failure (message names the
        repo, never the token), or any other Hub error.
    """
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    if not token:
        raise HubError("no Hub token: set HF_TOKEN or mount the token file")
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    except HfHubHTTPError as e:
        _raise_for_auth(e, repo_id, "create")
    try:
        before = api.repo_info(repo_id, repo_type="model").sha
        theta_hash = hashlib.sha256(files["theta.state"]).hexdigest()[:12]
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=d) for p, d in files.items()]
        # The "no files modified" notice of huggingface_hub is our no-op signal; keep it quiet.
        level = huggingface_hub.utils.logging.get_verbosity()
        huggingface_hub.utils.logging.set_verbosity_error()
        try:
            info = api.create_commit(
                repo_id,
                operations=ops,
                repo_type="model",
                commit_message=commit_message or f"Publish checkpoint (theta sha256 {theta_hash})",
            )
        finally:
            huggingface_hub.utils.logging.set_verbosity(level)
    except HfHubHTTPError as e:
        _raise_for_auth(e, repo_id, "upload to")
    return PublishResult(
        repo_id=repo_id,
        url=str(url),
        commit=info.oid,
        changed=info.oid != before,
        files=tuple(files),
    )
