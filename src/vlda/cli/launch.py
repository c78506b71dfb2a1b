"""``vlda train --nproc N``: the same command data-parallel on this machine, through torchrun.

PyTorch's own launcher (``torch.distributed.run``, the ``torchrun`` command) starts ``N``
processes of ``python -m vlda train ...`` (the same arguments without ``--nproc``) with a
standalone rendezvous on a free local port; each joins the process group
(:func:`vlda.distributed.init_from_env`). Several machines: call ``torchrun`` yourself
(docs/distributed.md).
"""

from __future__ import annotations

from collections.abc import Sequence


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` removed."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_args(nproc: int, argv: Sequence[str]) -> list[str]:
    """The ``torchrun`` arguments that run ``vlda <argv>`` (without ``--nproc``) in ``nproc``
    processes on this machine."""
    return ["--standalone", "--nproc-per-node", str(nproc), "-m", "vlda", *without_nproc(argv)]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``vlda <argv>`` in ``nproc`` processes; the exit code of the first that failed (0)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(torchrun_args(nproc, argv))
    except ChildFailedError as err:  # each process has printed its own error
        codes = [f.exitcode for _, f in sorted(err.failures.items())]
        return next((c for c in codes if c > 0), 1)
    return 0
