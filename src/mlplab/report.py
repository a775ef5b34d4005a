"""Print metrics the same way from every entry point."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_metrics(metrics: dict[str, float], title: str = "final metrics") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.4f}")
    Console().print(table)
