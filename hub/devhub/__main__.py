"""`python -m hub.devhub`: the same as `binderfed devhub`."""

import sys

from .cli import main

sys.exit(main())
