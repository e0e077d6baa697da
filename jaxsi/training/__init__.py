"""jaxsi.training."""
