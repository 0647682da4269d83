"""Where an endpoint finds the app's parts: `app.state`, read through the request.

`create_app` keeps the parts of one app in `app.state`; nothing is a
module-level global, so two apps in one process (a test's and a notebook's)
never share a store. An endpoint takes the `Request` and asks for a part:

    @router.get("/movies/{movie_id}")
    def get_movie(movie_id: int, request: Request) -> MovieOut:
        movie = store_of(request).get_movie(movie_id)

FastAPI's `Depends` could hand the parts in as parameters instead, but it
resolves each dependency on every request, which costs more than the cached
recommendation answers themselves; a plain function call costs next to nothing.
"""

from __future__ import annotations

from fastapi import Request

from labsupport.store import Store
from labsupport.tasks import RebuildServiceProtocol

__all__ = ["service_of", "store_of"]


def store_of(request: Request) -> Store:
    """The store of the app serving `request` (`app.state.store`)."""
    store: Store = request.app.state.store
    return store


def service_of(request: Request) -> RebuildServiceProtocol:
    """The rebuild service of the app serving `request` (`app.state.service`)."""
    service: RebuildServiceProtocol = request.app.state.service
    return service
