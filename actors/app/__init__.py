"""The launcher and the one function that wires the actor system together."""
