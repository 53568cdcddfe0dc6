"""pl-ssvd-denoise: CT series denoised by SVDs on Apache Spark, locally (SVDs of small patches, the
recommended output) and globally (the truncated SVD of the whole series, for comparison)."""

from ctsvd_common.cli import distribution_version

__version__ = distribution_version("pl-ssvd-denoise")
