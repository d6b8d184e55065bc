"""X-Dyna maths in plain torch/numpy: no `comfy` import, so everything here is unit-testable anywhere."""

import logging

logger = logging.getLogger("xdyna")
