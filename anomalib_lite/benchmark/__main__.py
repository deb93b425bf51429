"""``python -m anomalib_lite.benchmark``: see :mod:`anomalib_lite.benchmark.speed`."""

from anomalib_lite.benchmark.speed import main

if __name__ == "__main__":
    main()
