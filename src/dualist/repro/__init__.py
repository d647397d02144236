"""``dualist repro``: the paper's comparison on real data, with diagnostics, in one command.

- :mod:`~dualist.repro.profiles` — the budgets (``quick``, ``full``);
- :mod:`~dualist.repro.samples` — the seeded query caps that keep larger datasets inside a budget;
- :mod:`~dualist.repro.plan` — the reproduction as a plan over :mod:`dualist.stages`;
- :mod:`~dualist.repro.matrix` — the reproduction matrix: expected figures per condition, ``--check``, ``--table``.
"""

from dualist.repro.matrix import check_matrix, load_matrix, print_table, record_entry
from dualist.repro.plan import ReproArgs, StudentRun, resolve_profile, run_repro
from dualist.repro.profiles import PROFILES, Profile, get_profile

__all__ = ["ReproArgs", "run_repro", "resolve_profile", "StudentRun", "PROFILES", "Profile", "get_profile",
           "check_matrix", "load_matrix", "print_table", "record_entry"]
