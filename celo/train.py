"""``python -m celo.train …``: the reference's entry point, same flags as ``celo train``."""

import sys

from celo.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
