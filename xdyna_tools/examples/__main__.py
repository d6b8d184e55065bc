"""`python -m xdyna_tools.examples`: rebuild the example workflows (see `build.py`)."""

import sys

from .build import main

sys.exit(main())
