"""jaxsi.data."""
