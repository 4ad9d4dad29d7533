"""``celo publish``: push a checkpoint, its config and model card to the Hugging Face Hub.

Example::

    celo publish --checkpoint runs/train/phase2/theta.state --results runs/eval \\
        --repo-id my-org/celo-repro
    celo publish ... --dry-run --out /tmp/celo-card   # write the folder only

The token is read from ``--token-file``, else ``HF_TOKEN``, else the file named by
``HF_TOKEN_FILE``, else the Kubernetes secret mount ``/var/secrets/hf/token``. It
is never a flag value, so it cannot end up in logs or tracked params.
"""

from __future__ import annotations

import argparse
import os
import sys

#: Where manifests/ mounts the ``celo-hf-token`` secret when it is used as a file.
DEFAULT_TOKEN_FILE = "/var/secrets/hf/token"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "publish",
        help="publish a checkpoint with its model card to the Hugging Face Hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="theta.state to publish (local or gs://)")
    p.add_argument(
        "--results",
        default=None,
        help="output dir of `celo evaluate` (summary.json, plots/) for the card",
    )
    p.add_argument("--repo-id", required=True, help="Hub repository, ORG/NAME")
    p.add_argument(
        "--label",
        default=None,
        help="which optimizer of the evaluation this checkpoint is (default: the one "
        "evaluated from this file, else the only learned one)",
    )
    p.add_argument("--dry-run", action="store_true", help="write the folder only; no network")
    p.add_argument(
        "--out",
        default=None,
        help="folder to write the repository contents to (required with --dry-run)",
    )
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token-file", default=None, help="file holding the Hub token")
    try:
        from celo.cli import add_tracking_args
    except ImportError:
        pass
    else:
        add_tracking_args(p)
    return p


def read_token(token_file: str | None) -> str | None:
    """The Hub token from the flag's file, ``HF_TOKEN``, ``HF_TOKEN_FILE`` or the secret mount."""
    if token_file is None and os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"].strip()
    path = token_file or os.environ.get("HF_TOKEN_FILE")
    if path is None and os.path.exists(DEFAULT_TOKEN_FILE):
        path = DEFAULT_TOKEN_FILE
    if path is None:
        return None
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError as e:
        raise SystemExit(f"celo publish: cannot read the token file {path}: {e.strerror}") from None


def run(args) -> int:
    from celo import hub

    # celo.cli.main has logged the flags as params (the token is never one of them).
    tracker = getattr(args, "tracker", None)
    if args.dry_run and not args.out:
        print("celo publish: --dry-run needs --out DIR", file=sys.stderr)
        return 2
    try:
        files = hub.assemble(args.checkpoint, args.repo_id, args.results, args.label)
    except (hub.HubError, FileNotFoundError, KeyError) as e:
        print(f"celo publish: error: {e}", file=sys.stderr)
        return 1
    if args.out:
        hub.write_folder(files, args.out)
        print(f"wrote {len(files)} files for {args.repo_id} to {args.out}: {', '.join(files)}")
    if args.dry_run:
        return 0
    token = read_token(args.token_file)
    if not token:
        print(
            "celo publish: error: no Hub token; set HF_TOKEN, --token-file or HF_TOKEN_FILE "
            f"(or mount the secret at {DEFAULT_TOKEN_FILE})",
            file=sys.stderr,
        )
        return 1
    try:
        result = hub.publish(files, args.repo_id, token, private=args.private)
    except hub.HubError as e:
        print(f"celo publish: error: {e}", file=sys.stderr)
        return 1
    if result.changed:
        print(f"published {len(files)} files to {result.url} (commit {result.commit})")
    else:
        print(f"{result.url} already holds these files (commit {result.commit}); nothing to do")
    if tracker is not None:
        tracker.set_tags(
            {
                "hub_repo": args.repo_id,
                "hub_commit": result.commit or "",
                "hub_changed": str(result.changed).lower(),
            }
        )
    return 0
