"""The log formats: the event log and joined log (VW DSJSON, :mod:`.events`)
and tabular logged bandit data brought into them (:mod:`.tabular`)."""
