"""jaxsi.transforms."""
