"""Packaging glue that pyproject.toml cannot express: the stage folders at the repository's top level
(avatar/, export/, streamer/, server/, web/) install as subpackages of `ideal`, so one namespace lands in
site-packages and a user's own `server.py` or `export.py` can never shadow ours."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
STAGES = ("avatar", "export", "streamer", "server", "web")

package_dir = {"ideal": "ideal"}
packages = ["ideal", *(f"ideal.{name}" for name in find_packages(where="ideal"))]
for stage in STAGES:
    package_dir[f"ideal.{stage}"] = stage
    packages += [f"ideal.{stage}", *(f"ideal.{stage}.{name}" for name in find_packages(where=str(ROOT / stage)))]

# data files travel with their package: the built-in avatar and the audio-to-mouth model (in folders below
# ideal.avatar, hence the recursive pattern), and the browser client with its extension (web/extension/)
package_data = {"ideal.avatar": ["assets/**/*"], "ideal.web": ["*.html", "*.js", "*.css", "*.png", "*.svg", "*.ico",
                                                                 "extension/*"]}

setup(package_dir=package_dir, packages=packages, package_data=package_data)
