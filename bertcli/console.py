"""One rich console on stderr, so stdout stays clean for machine-readable output."""

from rich.console import Console

console = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def error_line(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True, markup=True)
