"""P1's reference: a bare FastAPI endpoint that only validates the same body, served like gradserve."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request, Response

from service import wire

app = FastAPI()


@app.post("/v1/gradients")
async def gradients(request: Request) -> Response:
    wire.GradientsRequest.model_validate_json(await request.body())
    return Response(b"{}", media_type="application/json")


def serve(reference: FastAPI) -> None:
    """Serve a reference app on --port as the bench starts servers (readiness at /readyz)."""

    @reference.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(reference, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    serve(app)
