"""focustune: tune and compare mistake-focused training methods on small, imbalanced image data."""

__version__ = "0.1.0"
