"""Installing segpipe is quiet: setuptools reads pyproject.toml without deprecation warnings."""

import os
import warnings

from tests.conftest import REPO


def test_pyproject_reads_without_setuptools_warnings():
    from setuptools.dist import Distribution

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distribution = Distribution()
            distribution.parse_config_files()
    finally:
        os.chdir(cwd)
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert distribution.metadata.license_expression == "Apache-2.0"
