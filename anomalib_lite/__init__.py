"""anomalib_lite: unsupervised visual anomaly detection with autoencoders."""

__version__ = "0.1.0"
