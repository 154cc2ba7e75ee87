"""``python -m metacompress.cli``: the ``metacompress`` command (what torchrun launches)."""

import sys

from metacompress.cli import main

if __name__ == "__main__":
    sys.exit(main())
