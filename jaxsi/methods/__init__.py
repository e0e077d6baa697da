"""jaxsi.methods."""
