"""Tests of actors/workspaces, with real git."""
