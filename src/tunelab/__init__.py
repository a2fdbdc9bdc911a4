"""tunelab: compose model x task x adapter x hardware into tracked Lightning runs."""

__version__ = "0.1.0"
