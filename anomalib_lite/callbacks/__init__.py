"""Lightning callbacks: visual outputs of the test stage."""

from anomalib_lite.callbacks.visual_outputs import VisualOutputs

__all__ = ["VisualOutputs"]
