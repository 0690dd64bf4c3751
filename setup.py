"""Maps the product's top-level folders into the one import namespace ``flotilla``.

``daemons/`` becomes ``flotilla.daemons``, ``cloudinit/`` becomes ``flotilla.cloudinit`` and
``ignition/`` becomes ``flotilla.ignition``. Subpackages are discovered so that adding a
folder with an ``__init__.py`` is all a new module needs. Metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("daemons", "cloudinit", "ignition")

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in TOP_LEVEL:
    root = f"flotilla.{folder}"
    packages.append(root)
    package_dir[root] = folder
    packages.extend(f"{root}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=package_dir, package_data={"": ["*.json", "*.conf", "*.xml"]})
