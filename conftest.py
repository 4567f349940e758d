"""Pytest configuration shared by every test path (tests/, the package's doctests, notebooks).

Before torch computes anything, the CPU kernels are pinned for this process
and for every notebook kernel that nbval starts (kernels inherit this
environment), so that the stored outputs compare equal on any x86-64
processor. A value set outside (``ATEN_CPU_CAPABILITY=default``, say) is kept.
See :mod:`kt_helpers.reproducibility`.

The notebooks' training cache (:mod:`kt_helpers.cache`) starts empty in every
test session, in a temporary folder that the kernels inherit: a notebook that
trains a model an earlier notebook trained reads the same bits back, but no
test reads what an earlier session or the user's own runs left.
"""

import atexit
import os
import shutil
import tempfile

from kt_helpers import cache, reproducibility

os.environ.update(reproducibility.pinned_env())
_CACHE = tempfile.mkdtemp(prefix="kt-test-cache-")
os.environ[cache.DIR_VARIABLE] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
