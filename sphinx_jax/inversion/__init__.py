"""Inversion itself: the engine (a jitted, vmapped Optax step), the methods it
runs, the forward operators of restoration, metrics, attribute learning and edits."""
