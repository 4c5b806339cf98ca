"""Measurement: timers, memory (torch allocator, NVML, host RSS), environment capture."""
