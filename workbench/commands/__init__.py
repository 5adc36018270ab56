"""Sub-commands of ``workbench``: one module per analysis, each with ``add_parser(sub)``."""
