"""Pure-ASGI middleware and Strawberry schema extensions."""
