"""jaxsi.rewards."""
