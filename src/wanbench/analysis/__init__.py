"""Analysis without I/O: FLOP model, GPU peak rates, statistics, plausibility, scaling."""
