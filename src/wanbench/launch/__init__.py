"""Where workers run: this process, or torchrun workers (single and multi-node)."""
