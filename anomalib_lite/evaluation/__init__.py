"""Evaluation outside the LightningModule: validation bookkeeping and test-stage results."""

from anomalib_lite.evaluation.test_stage import (
    Evaluator,
    batch_record,
    evaluate,
    gather_records,
    score_rows,
)
from anomalib_lite.evaluation.validation_stage import ValidationScores

__all__ = ["Evaluator", "ValidationScores", "batch_record", "evaluate", "gather_records",
           "score_rows"]
