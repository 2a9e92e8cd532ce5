"""``python -m tests.soak``: the chaos soak (``make soak``)."""

import sys

from tests.soak.run import main

sys.exit(main())
