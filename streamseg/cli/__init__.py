"""The command line: the parser and its shared argument groups (:mod:`.parser`), argv read back into frozen
configs (:mod:`.configs`), and one handler per subcommand with logging, signals and exit codes
(:mod:`.commands`). The top floor: nothing in the package imports it."""

from .commands import main

__all__ = ["main"]
