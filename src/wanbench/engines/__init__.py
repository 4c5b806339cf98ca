"""Engines other than wanbench's own, run under the same worker, timers, store and report: the Wan team's code
(official.py) and stock diffusers (stock.py). Each has load() and run_phases(), called by engine/generate.py."""
