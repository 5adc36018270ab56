"""Sub-commands of ``workbench``: one module per package of analyses (``commands/<package>.py`` for
``analyses/<package>/``), each with ``add_parser(sub)``; ``cli.py`` finds them from ``analyses.PACKAGES``."""
