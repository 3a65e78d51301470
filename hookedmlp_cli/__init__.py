"""The ``hookedmlp`` console command's front door: its arguments, ``--help`` and ``--version``, without torch.

torch takes seconds to import; this package never imports it, and ``hookedmlp`` imports its names
on first use, so ``hookedmlp --help`` and ``python -m hookedmlp --help`` answer at once. ``hookedmlp_cli.main``
parses the arguments, then hands them to ``hookedmlp_cli.commands``, which runs the command.
"""
