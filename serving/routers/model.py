"""`GET /model`: which model answers (version and served files' sha256 from models/bundle.json), its test metrics, its classes."""

from fastapi import APIRouter, Request

from product_classifier import paths
from product_classifier.atomic import read_json
from product_classifier.inference.labels import CLASSES, category

from .. import schemas
from ..dependencies import Authorized, Service
from ..errors import AUTH_ERRORS
from ..service import ModelService

router = APIRouter(tags=["model"])
EVALUATE_METRICS = paths.EVALUATION / paths.METRICS_FILE


@router.get("/model", response_model=schemas.ModelInfo, responses=AUTH_ERRORS)
def model(request: Request, user: Authorized, service: Service):
    """Which model answers: its version and served files' sha256 (models/bundle.json), its test metrics, its classes."""
    return {"version": service.version, "artifacts": service.identity.files,
            "fusion": service.predictor.fusion.method, "image_size": service.predictor.image_size,
            "image_precision": service.predictor.image_precision,
            "metrics": request.app.state.evaluate_metrics, "role": service.role,
            "challenger": request.app.state.challenger.describe() if request.app.state.challenger else None,
            "classes": [{"prdtypecode": c, "category": category(c)} for c in CLASSES]}


def evaluate_metrics(service: ModelService) -> dict | None:
    """The evaluate stage's metrics next to the dvc.lock that versions the model, if present."""
    try:
        return read_json(service.identity.lock_path.parent / EVALUATE_METRICS)
    except (OSError, ValueError):
        return None
