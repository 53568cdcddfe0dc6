"""pl-svd-render: denoised CT slices rebuilt from the leading SVD components."""

from ctsvd_common.cli import distribution_version

__version__ = distribution_version("pl-svd-render")
