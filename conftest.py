"""Pytest configuration shared by every test path (tests/, the package's doctests, notebooks).

Before torch computes anything, the CPU kernels are pinned for this process
and for every notebook kernel that nbval starts (kernels inherit this
environment), so that the stored outputs compare equal on any x86-64
processor. A value set outside (``ATEN_CPU_CAPABILITY=default``, say) is kept.
See :mod:`kt_helpers.reproducibility`.
"""

import os

from kt_helpers import reproducibility

os.environ.update(reproducibility.pinned_env())
