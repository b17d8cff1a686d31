"""REST route behind the dashboard's upload box: a file in, the items an import would learn out.

    POST /v1/import/parse?filename=notes.md[&format=&split=paragraph&column=text&domain_column=&domain=...]

The server splits the file with the same code as `neural-memory import` (`neural_memory.importing`),
so a file becomes the same items whichever way it is imported; the dashboard then sends them in
batches to `observe` (with request ids), showing progress. Nothing is learned by this call.
Files larger than MAX_PARSE_BYTES, or of more than MAX_PARSE_ITEMS items, are for the command
line, which streams any size.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Query, Request

from neural_memory.importing import FORMATS, SPLITS, ImportOptions, read_items
from serve import schemas as S
from serve.http_middleware import API_PREFIX, UploadRoute
from serve.rest import ERRORS, Svc

MAX_PARSE_BYTES = 16 * 1024 * 1024
# The dashboard holds the items and sends them in batches: 16 MB of one-character lines was 8M
# items, a 216 MB answer built in over a minute. More items are for the command line.
MAX_PARSE_ITEMS = 100_000
PARSE_ROUTE = re.compile(r"/v1/import/parse$")


def parse_upload() -> UploadRoute:
    return UploadRoute("POST", PARSE_ROUTE, MAX_PARSE_BYTES,
                       "import files this large with `neural-memory import`, which has no size limit")


def create_import_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["learning"], responses=ERRORS)

    @router.post("/import/parse", response_model=S.ParsedFile,
                 summary="Split an uploaded file into the items an import would learn (learns nothing)",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def parse(
        request: Request, _s: Svc,
        filename: Annotated[str, Query(min_length=1, max_length=255,
                                       description="The file's name; its extension gives the format.")],
        format: Annotated[str | None, Query(  # noqa: A002 - the option's name everywhere
            pattern=f"^({'|'.join(sorted(set(FORMATS.values())))})$",
            description="The format, if the extension does not say.")] = None,
        split: Annotated[str, Query(pattern=f"^({'|'.join(SPLITS)})$")] = "paragraph",
        column: Annotated[str, Query(min_length=1, max_length=200, description="CSV: the text's column.")] = "text",
        domain_column: Annotated[str | None, Query(min_length=1, max_length=200,
                                                   description="CSV: a column with each row's domain.")] = None,
        domain: S.NewDomain | None = None,
    ) -> dict:
        options = ImportOptions(format=format, split=split, column=column, domain_column=domain_column, domain=domain)
        # In a thread: splitting 16 MB of short lines takes seconds, which the event loop would
        # have spent not answering anyone else.
        items = await asyncio.to_thread(read_items, await request.body(), filename, options, MAX_PARSE_ITEMS)
        return {"items": [{"text": i.text, "domain": i.domain} for i in items], "count": len(items)}

    return router
