"""`python -m clip2point.torchrun ARGS`: torchrun (torch.distributed.run, the same arguments) that
ends an interrupted run the way one c2p process does.

On Ctrl-C every rank stops as one process would (exit 130, the finished work kept, its one-line
message), but torchrun's own launcher, which receives the signal too, passes it on to the ranks and
then dies with a SignalException traceback and exit code 1, whatever the ranks did. This wrapper
runs the same launcher and turns that ending into one line and 128 + the signal's number (130 for
Ctrl-C); everything else (failed ranks, usage errors) is torchrun's as it is.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    try:
        torchrun(None if argv is None else list(argv))
    except SignalException as e:
        number = int(e.sigval)
        print(f"interrupted ({signal.Signals(number).name}): torchrun passed it on to every rank and stopped",
              file=sys.stderr)  # fmt: skip
        return 128 + number
    return 0


if __name__ == "__main__":
    sys.exit(main())
