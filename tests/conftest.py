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


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
