"""Tests of actors/adapters, against recorded transcripts of the real CLIs."""
