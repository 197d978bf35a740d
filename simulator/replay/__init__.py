"""Offline evaluation on logged traffic (``placement replay``), one concept a module.

* :mod:`.options` -- what a replay is asked to do (names, settings; light);
* :mod:`.logarrays` -- the joined log as per-slot arrays;
* :mod:`.targets` -- target policies and their ``--policy`` specs;
* :mod:`.progressive` -- a target over the log in time order, fanned out;
* :mod:`.reward_model` -- q_hat for DM and the DR family;
* :mod:`.estimation` -- estimates, intervals and diagnostics of one target;
* :mod:`.search`, :mod:`.importance` -- VW settings search, feature-group importance;
* :mod:`.pipeline` -- all of it, :func:`~.pipeline.run_replay`;
* :mod:`.report`, :mod:`.progress` -- tables, HTML/plots, progress.

Nothing is imported here, so the command line can read :mod:`.options`
without loading the estimators.
"""
