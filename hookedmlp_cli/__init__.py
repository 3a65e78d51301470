"""The ``hookedmlp`` console command's front door: its arguments, ``--help`` and ``--version``, without torch.

Importing ``hookedmlp`` imports torch (about 2 s); this package imports neither, so
``hookedmlp --help`` and ``hookedmlp --version`` answer at once. ``hookedmlp_cli.main``
parses the arguments, then hands them to ``hookedmlp_cli.commands``, which runs the command.
"""
