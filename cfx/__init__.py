"""cfx — curate the Community Forensics image-forensics datasets."""

__version__ = "0.1.0"
