"""What each command does, on typed settings: invert a folder, compare
methods, edit. The commands (sphinx_jax/run.py, demo.py, edit.py) turn their
config into these settings and call one function here."""
