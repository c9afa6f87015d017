"""The HTTP layer: the app, its routes, admission control, middleware, problems and shutdown."""
