import sys

from mover.cli.main import main

sys.exit(main())
