"""pl-ssvd-denoise: distributed stochastic SVD of CT series on Apache Spark."""

__version__ = "0.1.0"
