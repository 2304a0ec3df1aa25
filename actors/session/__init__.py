"""The coordinator actor, the pure session core (state, phases, rules) and the prompts it sends."""
