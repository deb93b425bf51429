"""Callbacks: Lightning's (visual outputs of the test stage, the state a resumed fit carries
on, an average of the weights) and Hydra's (sweep tables)."""

from anomalib_lite.callbacks.aggregate_sweep import AggregateSweep
from anomalib_lite.callbacks.ema import EMA
from anomalib_lite.callbacks.resume_state import ResumeState
from anomalib_lite.callbacks.visual_outputs import VisualOutputs

__all__ = ["EMA", "AggregateSweep", "ResumeState", "VisualOutputs"]
