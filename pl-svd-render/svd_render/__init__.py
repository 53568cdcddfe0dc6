"""pl-svd-render: denoised CT slices rebuilt from the leading SVD components."""

__version__ = "0.1.0"
