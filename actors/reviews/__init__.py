"""The reviewer actor, the context a review request carries and the decision policy."""
