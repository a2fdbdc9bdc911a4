"""A virtual environment that sees only what the lent GPU machine's image has (torch, lightning,
transformers, peft, torchmetrics, pyarrow and their dependencies), taken from the running
environment, so bench/gpu_check.sh's offline install and import check can be tried anywhere:

    python bench/gpu/image_venv.py /tmp/image && PYTHON=/tmp/image/bin/python \\
        bash bench/gpu_check.sh --cpu-dry-run
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

IMAGE = ("torch", "lightning", "transformers", "peft", "torchmetrics", "pyarrow")


def closure(roots: tuple[str, ...]) -> list[md.Distribution]:
    found: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in found:
            continue
        found[key] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


def main(target: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    farm = target / "image-site"
    farm.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in closure(IMAGE):
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = here / top
            if source.exists() and not (farm / top).exists() and top != "__pycache__":
                (farm / top).symlink_to(source)
    site = next((target / "lib").glob("python3*/site-packages"))
    (site / "image.pth").write_text(str(farm) + "\n")
    print(f"{target}: {len(list(farm.iterdir()))} entries from {len(closure(IMAGE))} distributions")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
