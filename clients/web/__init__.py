"""The caption page, overlay and display (HTML, CSS, JavaScript).

This folder is the package `streamer.web` (pyproject.toml maps it), so the pages ship inside the
wheel as package data and a non-editable install (the systemd service, the container) serves them.
"""
