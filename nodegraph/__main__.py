"""`python -m nodegraph ...`, the same as the `nodegraph` command."""

import sys

from .launch import main

sys.exit(main())
