"""Public routes: welcome, status, liveness and readiness."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import schemas
from ..errors import documented

router = APIRouter(tags=["status"])


@router.get("/", response_model=schemas.Message)
def root():
    return {"message": "Bienvenue sur l'API de classification des produits Rakuten ! Documentation : /docs"}


@router.get("/status", response_model=schemas.Status)
def status():
    return {"status": "L'API fonctionne correctement"}


@router.get("/health/live", response_model=schemas.Health, summary="The process answers")
async def live():  # async, as ready: answered on the event loop even when every worker thread is busy
    return {"status": "ok"}


@router.get("/health/ready", response_model=schemas.Health, summary="The model is loaded",
            responses=documented(503, "The model is not loaded yet."))
async def ready(request: Request):
    service = request.app.state.service
    if service is None:
        return JSONResponse({"status": "loading", "model_version": None}, 503)
    return {"status": "ok", "model_version": service.version}
