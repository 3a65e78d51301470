"""``python -m hookedmlp``: the ``hookedmlp`` command."""

import sys

from hookedmlp_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
