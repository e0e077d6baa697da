"""jaxsi.sampling."""
