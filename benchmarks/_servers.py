"""The two servers of B6, each run in its own process under uvicorn on 127.0.0.1.

    python benchmarks/_servers.py bare PORT
    python benchmarks/_servers.py callschedule PORT sqlite:///path/calls.db

``bare`` is the reference: a Starlette endpoint at the same path that parses the same JSON body and
answers a small JSON body, touching no database. ``callschedule`` is the library's own app
(``callschedule.asgi.standalone_app``) over a SQLite file at the default durability. Both run with
the same uvicorn settings (one process, access log off).
"""

from __future__ import annotations

import sys
from typing import Any


def bare_app() -> Any:
    """A Starlette app with one endpoint: ``PUT /api/calls/{call_id}/schedule``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def schedule(request: Request) -> JSONResponse:
        body = await request.json()
        timestamp = body.get("scheduled_timestamp") if isinstance(body, dict) else None
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            return JSONResponse({"status": "error", "message": "scheduled_timestamp"}, status_code=400)
        return JSONResponse(
            {
                "message": "Scheduled call time updated successfully",
                "status": "success",
                "error": None,
                "data": {"call_id": request.path_params["call_id"], "new_scheduled_timestamp": timestamp},
            }
        )

    return Starlette(routes=[Route("/api/calls/{call_id}/schedule", schedule, methods=["PUT"])])


def library_app(url: str) -> Any:
    """callschedule's standalone app (the API mounted at ``/api``) over the store at ``url``."""
    from callschedule import CallScheduler
    from callschedule.asgi import standalone_app

    return standalone_app(CallScheduler.open(url, load_entry_points=False))


def main() -> None:
    """Serve the app named on the command line until terminated."""
    import uvicorn

    kind, port = sys.argv[1], int(sys.argv[2])
    app = bare_app() if kind == "bare" else library_app(sys.argv[3])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
