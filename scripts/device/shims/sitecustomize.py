"""Environment shim for the GPU check only (scripts/device/gpu_check.sh puts this folder on PYTHONPATH).

numba-cuda as installed on the lent GPU image references ``numpy.row_stack``, which numpy 2.5 removed; its
compiler then fails on import of its array overloads.  ``row_stack`` was an alias of ``vstack``, so restoring
the alias is exact.  The bundle itself never imports this module.
"""

import numpy

if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
