"""Package discovery (the metadata is in pyproject.toml).

Every package under ``captiond/`` is found automatically; the folders that live beside it
(``migrations``, ``templates``, ``systemd``) are mapped into the package by
``[tool.setuptools.package-dir]`` and their subfolders are found the same way.
"""

from setuptools import find_namespace_packages, find_packages, setup

#: Top-level folders installed as subpackages of captiond (the same as package-dir).
MAPPED = {
    "captiond.migrations": "migrations",
    "captiond.templates": "templates",
    "captiond.systemd": "systemd",
}

packages = find_packages(include=["captiond", "captiond.*"])
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_namespace_packages(folder))]

setup(packages=packages, package_dir=MAPPED)
