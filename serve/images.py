"""REST routes for memory images: download a memory as one `.nmem` file, create one from it.

    GET /v1/memories/{name}/image[?tag=T]   the image (checkpoint T, or a snapshot of now)
    PUT /v1/memories/{name}/image           body: an image file -> a new memory `name` (201)

The file format is `neural_memory.image` (the client's, so both sides read and write the same
bytes); the checkpoint inside is opaque and comes from / goes to the cluster
(`MemoryCluster.export_state` / `import_state`). Uploads are larger than JSON bodies: `image_upload` gives BodyLimitMiddleware this route's own
limit (NMEM_MAX_IMAGE_BYTES), enforced while the body streams in (413 beyond it).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cluster import ExportedState
from neural_memory import image
from serve import schemas as S
from serve.http_middleware import API_PREFIX, UploadRoute
from serve.rest import ERRORS, NamePath, Svc

IMAGE_ROUTE = re.compile(r"/v1/memories/[^/]+/image$")  # searched: the app may sit under a prefix
TagQuery = Annotated[str | None, Query(pattern=S.TAG_PATTERN,
                                       description="Checkpoint tag; omit for the live state.")]


def image_upload(max_image_bytes: int) -> UploadRoute:
    """The image upload's own body limit, for BodyLimitMiddleware."""
    return UploadRoute("PUT", IMAGE_ROUTE, max_image_bytes, "send a smaller image (NMEM_MAX_IMAGE_BYTES)")


def _producer() -> str:
    try:
        return f"neural-memory-cluster {version('neural-memory-cluster')}"
    except PackageNotFoundError:
        return "neural-memory-cluster"


def create_image_router(max_image_bytes: int) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["images"], responses=ERRORS)

    @router.get("/memories/{name}/image", response_class=Response,
                summary="Download a memory (a checkpoint tag or its live state) as an image",
                responses={200: {"content": {image.MEDIA_TYPE: {}},
                                 "description": "The image file (.nmem)"}})
    async def export_image(name: NamePath, s: Svc, tag: TagQuery = None) -> Response:
        state = await s.export_state(name, tag)
        header = image.new_header(name=name, tag=tag, config=state.config,
                                  weight_hash=state.weight_hash, step=state.step,
                                  parts=[(image.CHECKPOINT_PART, state.data)], producer=_producer())
        body = b"".join(image.encode(header, {image.CHECKPOINT_PART: state.data}))
        filename = f"{name}@{tag}.nmem" if tag else f"{name}.nmem"
        return Response(body, media_type=image.MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @router.put("/memories/{name}/image", status_code=201, response_model=S.ImportImageResponse,
                summary="Create a memory from an image (config, encoder and weights from the file)",
                openapi_extra={"requestBody": {"required": True, "content": {
                    image.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
                responses={413: {"model": S.ErrorResponse,
                                 "description": "Image over NMEM_MAX_IMAGE_BYTES"}})
    async def import_image(name: NamePath, request: Request, s: Svc) -> dict:
        data = await request.body()  # BodyLimitMiddleware stops it at max_image_bytes
        img = image.decode(data, max_bytes=max_image_bytes, source="the uploaded image")
        h = img.header
        state = ExportedState(h.config, h.weight_hash, h.step, img.part(image.CHECKPOINT_PART),
                              encoder=h.encoder)  # all checked against the checkpoint itself
        result = await s.import_state(name, state)
        return {**result, "source": f"{h.name}@{h.tag}" if h.tag else h.name}

    return router
