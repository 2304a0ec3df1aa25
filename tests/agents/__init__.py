"""Tests of actors/agents: the worker, launching, the demo agents and the real CLIs."""
