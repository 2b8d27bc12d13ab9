"""HTTP: the FastAPI app, its lifespan-owned state, and one module per group of routes."""
