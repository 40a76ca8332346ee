"""videogen: streaming text-to-video generation with Polynomial Mixers (PoM)."""

__version__ = "0.1.0"
