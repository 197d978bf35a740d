"""Pure-Python learning core of the placement engine (no gRPC)."""
