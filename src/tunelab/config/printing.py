"""The resolved config as a tree on the console at start."""

from __future__ import annotations

import yaml
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree


def print_tree(cfg: DictConfig) -> None:
    tree = Tree("[bold]config[/bold]")
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, value in plain.items():
        if isinstance(value, dict):
            branch = tree.add(f"[bold cyan]{key}[/bold cyan]")
            branch.add(Syntax(yaml.safe_dump(value, sort_keys=False).rstrip(), "yaml"))
        else:
            tree.add(f"[bold cyan]{key}[/bold cyan]: {value}")
    Console().print(tree)
