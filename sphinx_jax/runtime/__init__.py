"""Running on many devices and hosts, and resuming: jax.distributed, sharding,
run fingerprints, manifests and batch checkpoints."""
