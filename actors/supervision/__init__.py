"""Who restarts a crashed actor, and how an actor reports its crash."""
