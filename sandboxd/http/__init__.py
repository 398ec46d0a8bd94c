"""The HTTP layer (aiohttp only): the app, its middlewares, one module per resource, OpenAPI."""
