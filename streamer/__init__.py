"""streamer: a real-time captioning daemon (live audio in, partial and final captions out)."""

__version__ = "0.1.0"
