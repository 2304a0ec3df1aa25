"""Tests of webui: the gateway, the dashboard in a real browser, the server's bounds."""
