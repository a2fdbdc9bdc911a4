"""The requirements in pyproject.toml admit no release known to be compromised, in the core
dependencies or in any extra."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

# Malware releases pulled from PyPI (advisory GHSA-w37p-236h-pfx3), under both package names.
COMPROMISED = {"lightning": ["2.6.2", "2.6.3"], "pytorch-lightning": ["2.6.2", "2.6.3"]}


def project_requirements() -> list[Requirement]:
    """Every requirement the project declares: core dependencies and every optional group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"],
             *(line for group in project["optional-dependencies"].values() for line in group)]
    return [Requirement(line) for line in lines]


def admitted_compromised(requirements: list[Requirement]) -> list[str]:
    """`name==version` for each compromised release some requirement would let pip install."""
    return [f"{req.name}=={version}" for req in requirements
            for version in COMPROMISED.get(canonicalize_name(req.name), [])
            if req.specifier.contains(version, prereleases=True)]


def test_no_compromised_release_is_admitted():
    requirements = project_requirements()
    assert "lightning" in {canonicalize_name(r.name) for r in requirements}, "lightning is read"
    assert admitted_compromised(requirements) == []


def test_the_check_catches_a_range_that_admits_them():
    """The range pyproject had before (and a bare name) would let pip pick 2.6.2 or 2.6.3."""
    loose = [Requirement("lightning>=2.5,<2.7"), Requirement("pytorch_lightning")]
    assert admitted_compromised(loose) == ["lightning==2.6.2", "lightning==2.6.3",
                                           "pytorch_lightning==2.6.2", "pytorch_lightning==2.6.3"]
    assert admitted_compromised([Requirement("lightning>=2.5,!=2.6.2,!=2.6.3")]) == []
