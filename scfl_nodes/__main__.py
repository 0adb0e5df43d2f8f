import sys

from scfl_nodes.cli import main

sys.exit(main())
