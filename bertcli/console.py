"""One rich console on stderr, so stdout stays clean for machine-readable output.

Messages are escaped: a path or a `pip install 'bertcli[extra]'` hint must print as written.
"""

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def error_line(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}", soft_wrap=True, markup=True)
