"""``python -m vlda`` — the command line; what ``torchrun ... -m vlda train ...`` starts in each process.

The command line's entry point, not a library import: the CLI module is looked up by name, so
that no module of the package (this one included) imports the CLI layer.
"""

import importlib
import sys

if __name__ == "__main__":
    sys.exit(importlib.import_module("vlda.cli.main").main())
