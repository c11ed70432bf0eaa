"""Test session setup: offline, and one model cache for the whole session.

The tiny builtins are built once into $NODEGRAPH_CACHE: an inherited one is reused
(e.g. NODEGRAPH_CACHE=/tmp/ng/cache), otherwise a fresh temporary folder is made and
removed after the session. Set here, before any test module imports huggingface_hub,
which reads HF_HUB_OFFLINE once, at import.
"""

import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
_OWN_CACHE = None if os.environ.get("NODEGRAPH_CACHE") else tempfile.mkdtemp(prefix="nodegraph-test-cache-")
if _OWN_CACHE:
    os.environ["NODEGRAPH_CACHE"] = _OWN_CACHE


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="run the property and fuzz tests with 50x their budget")


def pytest_configure(config):
    if config.getoption("--slow"):
        from hypothesis import settings

        settings.register_profile("slow", max_examples=5000)
        settings.load_profile("slow")


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
