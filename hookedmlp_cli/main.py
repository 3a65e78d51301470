"""The console script: parse without torch, then run the command in ``hookedmlp_cli.commands``."""

import sys
from collections.abc import Sequence
from typing import Optional

from hookedmlp_cli.parser import parse_args

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``hookedmlp`` console script: ``--help``, ``--version`` and argument errors exit here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if getattr(args, "job", False):  # a long job's progress shows from its first second, not after torch's import
        from hookedmlp.progress import JobProgress  # tqdm only, and hookedmlp's names load on first use

        args.job = JobProgress(f"hookedmlp {args.command}", "importing torch")
    try:
        from hookedmlp_cli.commands import run  # torch is imported only once there is a command to run
    except KeyboardInterrupt:  # Ctrl-C during the slow torch import: nothing has started
        if getattr(args, "job", False):
            args.job.close()
        print(f"hookedmlp {args.command}: interrupted before it started; nothing was written", file=sys.stderr)
        return 130
    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
