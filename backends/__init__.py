"""Engines behind the API, each with an explicit open/close lifecycle. Imports nothing from the app."""
