# URLs live here because pyproject.toml cannot write the "Home-page" metadata,
# which chris_plugin_info reports as the plugin's documentation link. "Source"
# becomes the descriptor's public_repo (workflows/ctsvd_pipeline/descriptors.py
# passes it to chris_plugin_info, which has no metadata key of its own for it).
from setuptools import setup

SOURCE = "https://github.com/FNNDSC/ct-svd-denoise/tree/main/pl-svd-render"
setup(url=f"{SOURCE}#readme", project_urls={"Source": SOURCE})
