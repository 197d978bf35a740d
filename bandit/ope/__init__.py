"""Off-policy estimation: what another policy would have earned on logged traffic.

Split the way Open Bandit Pipeline splits it: point estimators
(:mod:`.estimators`), intervals (:mod:`.intervals`), per-slot and page values,
slate estimators, the reward model, and diagnostics.
"""
