"""``python -m hookedmlp``: the ``hookedmlp`` command."""

import sys

from hookedmlp.cli import main

if __name__ == "__main__":
    sys.exit(main())
