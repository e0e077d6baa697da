"""jaxsi.models."""
