"""``dualist repro``: the paper's comparison on real data, with diagnostics, in one command."""

from dualist.repro.pipeline import ALL_LOSSES, LOSS_LABELS, ReproArgs, run_repro
from dualist.repro.profiles import PROFILES, Profile, get_profile

__all__ = ["ReproArgs", "run_repro", "PROFILES", "Profile", "get_profile", "ALL_LOSSES", "LOSS_LABELS"]
