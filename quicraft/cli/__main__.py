import sys

from quicraft.cli import main

sys.exit(main())
