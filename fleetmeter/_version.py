"""The package version: a core module, so the agent can report it without importing the top-level package."""
__version__ = "0.1.0"
