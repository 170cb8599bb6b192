"""Neural network modules (Flax linen): classifiers, generators, discriminators, U-Nets."""
