"""wanbench: run and benchmark Wan 2.2 text-to-video generation with trustworthy numbers."""

__version__ = "0.1.0"
