"""The one training engine: task interface, train state, mesh, loop, checkpoints, metrics."""
