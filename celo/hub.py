"""Hugging Face Hub access: download released checkpoints.

``download("amoudgl/celo")`` wraps ``huggingface_hub.hf_hub_download``: files are
cached in the standard HF cache, ``HF_HUB_OFFLINE=1`` serves from the cache
only, and ``HF_ENDPOINT`` points at another Hub (a mirror, or a test fake).
``huggingface_hub`` is imported lazily so that library users who never touch
the Hub do not pay for it.
"""

from __future__ import annotations

import os

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
