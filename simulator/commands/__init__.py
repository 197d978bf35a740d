"""The simulator's commands (``simulate``, ``replay``, ``import``, ``demo``):
option parsing, progress and output around the work in the modules they name.
Each imports its heavy modules when it runs, so ``placement --help`` is light."""
