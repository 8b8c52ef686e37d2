"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# No per-example deadline: a loaded 2-core CI machine must not turn slowness into failures
# (speed is measured in benchmarks/, never in tests). Under CI, examples are derandomized so
# that a red run can be reproduced exactly.
settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
