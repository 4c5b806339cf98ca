"""wanbench bench: a matrix of configurations, each in an isolated worker, results in a store."""
