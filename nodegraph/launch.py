"""The `nodegraph` command's entry point.

Ctrl-C before the command has started (while Python imports the library) ends the process
quietly, as a shell expects, instead of printing a traceback from inside an import; once it
has started, nodegraph.cli answers Ctrl-C itself.
"""

import signal
import sys

signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> int:
    from .cli import main as run

    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run()


if __name__ == "__main__":
    sys.exit(main())
