"""curate: build CLIP training sets the DataComp way."""

__version__ = "0.1.0"
