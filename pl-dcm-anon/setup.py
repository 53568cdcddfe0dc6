# chris_plugin_info reports the "Home-page" metadata as the plugin's documentation
# link in its ChRIS descriptor, and pyproject.toml has no field for it.
from setuptools import setup

setup(url="https://github.com/FNNDSC/ct-svd-denoise/tree/main/pl-dcm-anon#readme")
