"""The web page (`videogen serve`, the `[web]` extra)."""
