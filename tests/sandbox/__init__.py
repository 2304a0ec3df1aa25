"""Tests of actors/sandbox, with real bubblewrap and the real claude."""
