import sys

from pspsim.cli import main

sys.exit(main())
