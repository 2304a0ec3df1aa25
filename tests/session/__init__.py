"""Tests of actors/session: the coordinator and the session core."""
