import sys

from celo.cli import main

sys.exit(main())
