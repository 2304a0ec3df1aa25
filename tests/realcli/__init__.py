"""The real-CLI test tier: pinned agent CLIs (package.json) and a scripted model server."""
