"""Studies of a trained model: Monte Carlo, drift, bit-flip sweeps, midpoint fits, landscapes."""
