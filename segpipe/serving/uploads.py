"""A request's image: its bytes (the raw body or the file of a multipart form), bounded by ``--max-bytes``, decoded
the way ``predict`` decodes files; whatever is wrong with it is a :class:`RequestError` with a 4xx status."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from segpipe.data.imageio import DecodedImage, DecodeError, NotAnImage, TooLarge, UnsupportedMode, decode_image


class RequestError(Exception):
    """A request the server refuses: an HTTP status and the one line the client reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _too_large(size: str, limit: int) -> RequestError:
    return RequestError(413, f"the request has {size} bytes, more than the limit of {limit:,} (--max-bytes)")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (from its Content-Length when sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared):,}", limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit:,}", limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _form_file(request: Request, body: bytes) -> tuple[bytes, str]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except (MultiPartException, HTTPException) as exc:
        raise RequestError(400, f"malformed multipart form ({getattr(exc, 'message', None) or exc.detail})") from None
    files = [value for value in form.values() if isinstance(value, UploadFile)]
    if not files:
        raise RequestError(400, "the multipart form holds no file; send the image as a file field "
                                "(curl -F image=@photo.png)")
    return await files[0].read(), files[0].filename or "the uploaded file"


async def image_bytes(request: Request, limit: int) -> tuple[bytes, str]:
    """The image's bytes and a name for it in messages (the uploaded file's name, or "the request body")."""
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        data, name = await _form_file(request, body)
    else:
        data, name = body, "the request body"
    if not data:
        raise RequestError(400, f"{name} is empty; send an image's bytes (curl --data-binary @photo.png)")
    return data, name


def decoded(data: bytes, name: str) -> DecodedImage:
    """The image as RGB pixels, as ``predict`` reads it; 413 over ``--max-pixels`` (from the header, before
    decoding), 415 for what is no image or has no RGB meaning, 400 for a truncated or corrupt file."""
    try:
        return decode_image(data, name)
    except TooLarge as exc:
        raise RequestError(413, str(exc)) from None
    except (NotAnImage, UnsupportedMode) as exc:
        raise RequestError(415, str(exc)) from None
    except DecodeError as exc:
        raise RequestError(400, f"{exc}; the file may be truncated or corrupt") from None
