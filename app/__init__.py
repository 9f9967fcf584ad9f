"""learnkb's HTTP layer: the Litestar app factory, controllers, schemas and auth guard."""
