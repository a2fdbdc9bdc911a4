"""Which code ran: the installed versions of the packages a run depends on and, when tunelab
runs from a git checkout, the commit of that checkout and whether it had uncommitted changes.

Asked of tunelab's own source folder, never of the working directory: a run started inside some
other repository recorded that repository's commit.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tunelab.tracking import names

PACKAGE_DIR = Path(__file__).resolve().parents[1]     # the folder of the tunelab package
# What a run's numbers depend on: recorded as `tunelab.version.*` tags, compared by reproduce.
PACKAGES = ("tunelab", "torch", "transformers", "peft", "lightning", "mlflow", "datasets",
            "hydra-core", "torchmetrics")


def installed_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each of `packages` that is installed."""
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _git(folder: Path, *args: str) -> str | None:
    """git's output in `folder`, or None when git is missing or the command fails."""
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_identity(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """Tags `tunelab.code.version`, and `tunelab.code.commit` / `tunelab.code.dirty` when the
    package's own files are tracked by the repository around them (an installed copy in a
    virtualenv inside some project is not that project's code)."""
    identity = {names.CODE_VERSION: installed_versions(("tunelab",)).get("tunelab", "unknown")}
    if _git(package_dir, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return identity
    commit = _git(package_dir, "rev-parse", "HEAD")
    status = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    if commit:
        identity[names.CODE_COMMIT] = commit
        identity[names.CODE_DIRTY] = "true" if status else "false"
    return identity


def code_drift(recorded: dict[str, str],
               current: dict[str, str] | None = None) -> dict[str, tuple[str | None, str | None]]:
    """The `tunelab.code.*` tags whose recorded value differs from the running code's."""
    current = code_identity() if current is None else current
    keys = sorted(k for k in {*recorded, *current} if k.startswith(names.CODE_PREFIX))
    return {k: (recorded.get(k), current.get(k)) for k in keys if recorded.get(k) != current.get(k)}
