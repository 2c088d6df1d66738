"""The FastAPI app of ``speclake serve``: annotate spectra, look up the lake, read-only SQL, study reports.

``create_app(lake_dir, settings)`` builds it; ``speclake serve`` runs it under uvicorn on loopback.

Answers to bad input are JSON ``{"error", "detail", "request_id"}`` with a 4xx status, never a crash:

====  =================================================================================================
400   invalid JSON; SQL DuckDB cannot run (syntax error, unknown column)
401   missing or wrong ``X-API-Key`` (when the server has a key; /health never asks)
403   SQL refused by the read-only guard (writes, COPY, ATTACH, INSTALL/LOAD, SET, file readers ...)
404   unknown spectrum, compound, study or route
408   SQL past the per-query timeout (interrupted)
413   request body over the size limit; an uploaded file with too many scans
415   neither JSON nor a multipart upload; an uploaded file in no known spectrum format
422   a field out of range (NaN/negative peaks, unknown ion mode ...), a spectrum nothing is left of
      after cleaning, an SQL result over the size limit
====  =================================================================================================

Every response carries ``X-Request-ID`` (the client's, when it sends a sane one); the server logs one
line per request with it. Peaks may come unsorted: they are sorted by m/z, not refused.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from speclake import __version__
from speclake.lake.sql_guard import SqlError, SqlRefused
from speclake.serving.api.models import (AnnotateRequest, AnnotateResponse, AnnotationsPage, CompoundsOut, ErrorBody,
                                         Health, SpectrumOut, SqlRequest, SqlResponse, StudyOut)
from speclake.serving.api.service import (ApiSettings, BadInput, LakeService, NotFound, UnsupportedFormat,
                                          upload_suffix)

log = logging.getLogger("speclake.api")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: SQL refusal codes answered with another status than 403.
_SQL_STATUS = {"timeout": 408, "result_too_large": 422}
_ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 408, 413, 415, 422)}


# -- request context: id, size limit, one log line ---------------------------------------------------
class ApiError(HTTPException):
    """An HTTP error with its own short code (``error`` of the body)."""

    def __init__(self, status: int, code: str, detail: Any) -> None:
        super().__init__(status, detail)
        self.code = code


class PayloadTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_large", f"request body over the limit of {limit / 2**20:.1f} MiB")


class RequestContext:
    """ASGI middleware: a request id (header ``X-Request-ID``), the body size limit, one log line per request."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise PayloadTooLarge(self.max_body)
            return message

        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            if length > self.max_body:
                body = error_body("too_large", PayloadTooLarge(self.max_body).detail, rid)
                await JSONResponse(body, status_code=413)(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            log.info("%s %s %s -> %d (%.1f ms)", rid, scope.get("method"), scope.get("path"), status["code"],
                     (time.perf_counter() - t0) * 1000)


def error_body(code: str, detail: Any, request_id: str | None) -> dict[str, Any]:
    return {"error": code, "detail": detail, "request_id": request_id}


def _rid(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _error(request: Request, status: int, code: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, detail, _rid(request)), status_code=status, headers=headers)


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Pydantic errors as ``{field, message}`` (the offending input is left out: it may hold NaN)."""
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc) or "body", "message": str(e.get("msg", "invalid"))})
    return out


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          408: "timeout", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request"}


def install_error_handlers(app: FastAPI) -> None:
    """Every error as :class:`~.models.ErrorBody` JSON."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _CODES.get(exc.status_code, "error")
        return _error(request, exc.status_code, code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e.get("ctx", {}) for e in errors if e.get("type") == "json_invalid")
            return _error(request, 400, "invalid_json", f"the body is not valid JSON: {ctx.get('error', '')}".strip())
        return _error(request, 422, "invalid_request", field_errors(errors))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(request, 404, "not_found", str(exc))

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        status = 413 if exc.code == "too_many_scans" else 422
        detail: Any = str(exc) if not exc.details else {"message": str(exc), "scans": exc.details}
        return _error(request, status, exc.code, detail)

    @app.exception_handler(UnsupportedFormat)
    async def unsupported(request: Request, exc: UnsupportedFormat) -> JSONResponse:
        return _error(request, 415, "unsupported_format", str(exc))

    @app.exception_handler(SqlRefused)
    async def refused(request: Request, exc: SqlRefused) -> JSONResponse:
        log.info("%s SQL refused [%s]: %s", _rid(request), exc.code, exc.message)
        return _error(request, _SQL_STATUS.get(exc.code, 403), f"sql_{exc.code}", exc.message)

    @app.exception_handler(SqlError)
    async def sql_error(request: Request, exc: SqlError) -> JSONResponse:
        return _error(request, 400, "sql_error", str(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s %s failed", _rid(request), request.method, request.url.path)
        response = _error(request, 500, "internal_error", f"{type(exc).__name__}: the server logged it under this "
                                                          "request id")
        if _rid(request):
            response.headers["x-request-id"] = _rid(request)
        return response


# -- the app ---------------------------------------------------------------------------------------
_ANNOTATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AnnotateRequest"},
                                 "example": AnnotateRequest.model_config["json_schema_extra"]["examples"][0]},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary",
                                        "description": "an MGF, mzML, mzXML or MSP file (its MS2 scans)"},
                               "ionmode": {"type": "string", "enum": ["positive", "negative"],
                                           "description": "for scans whose file gives no polarity"},
                               "top_k": {"type": "integer", "minimum": 1}}}},
        },
    }
}


def create_app(lake_dir: str | Path, settings: ApiSettings | None = None) -> FastAPI:
    """The API over ``lake_dir`` (see the module docstring). The annotator opens when the server starts."""
    settings = settings or ApiSettings()
    service = LakeService(lake_dir, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.annotator)
        await run_in_threadpool(service.sql.warm)
        log.info("serving lake %s (annotation method %s)", service.lake_dir, service.annotator().ranker.name)
        try:
            yield
        finally:
            service.close()

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or ""
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"})

    app = FastAPI(title="speclake", version=__version__, lifespan=lifespan,
                  description="Structure annotation of MS/MS spectra, lake lookups and read-only SQL. "
                              "Errors are JSON {error, detail, request_id}; see each route's responses.")
    app.state.service = service
    app.add_middleware(RequestContext, max_body=settings.max_upload_bytes)
    install_error_handlers(app)
    keyed = [Depends(require_key)]

    @app.get("/health", response_model=Health, tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness: the lake served and whether the annotator is open (never needs the API key)."""
        return {"lake": service.lake_dir, "version": __version__, "annotator_ready": service.annotator_ready,
                "missing": service.missing}

    @app.post("/annotate", response_model=AnnotateResponse, dependencies=keyed, responses=_ERRORS,
              openapi_extra=_ANNOTATE_BODY, tags=["annotate"])
    async def annotate(request: Request) -> dict[str, Any]:
        """Rank candidate structures for one spectrum (JSON peaks) or for the MS2 scans of an uploaded file
        (multipart field ``file``), with the steps and default ranker of ``speclake annotate``."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
                raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
            try:
                req = AnnotateRequest.model_validate(body)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from exc
            top_k = min(req.top_k, settings.max_top_k)
            return await run_in_threadpool(service.annotate_peaks, req.precursor_mz, req.ionmode, req.peaks,
                                           charge=req.charge, top_k=top_k, query_id=req.query_id)
        if ctype == "multipart/form-data":
            return await _annotate_upload(request)
        raise ApiError(415, "unsupported_media_type", "send JSON (Content-Type: application/json) or a "
                       f"multipart/form-data upload with the field 'file'; got {ctype or 'no Content-Type'}")

    async def _annotate_upload(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=1, max_fields=10)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "upload the spectrum file in the form field 'file'")
            ionmode = form.get("ionmode") or None
            if ionmode not in (None, "positive", "negative"):
                raise HTTPException(422, f"ionmode must be positive or negative, got {ionmode!r}")
            try:
                top_k = min(int(form.get("top_k") or 20), settings.max_top_k)
            except (TypeError, ValueError) as exc:
                raise HTTPException(422, "top_k must be a whole number") from exc
            if top_k < 1:
                raise HTTPException(422, "top_k must be >= 1")
            name = Path(upload.filename or "upload").name
            with tempfile.TemporaryDirectory(prefix="speclake-api-") as tmp:
                path = Path(tmp) / ("upload" + upload_suffix(name))
                path.write_bytes(await upload.read())
                return await run_in_threadpool(service.annotate_file, path, source_file=name, ionmode=ionmode,
                                               top_k=top_k)
        finally:
            await form.close()

    @app.get("/spectra/{spectrum:path}", response_model=SpectrumOut, dependencies=keyed, responses=_ERRORS,
             tags=["lake"])
    def spectrum(spectrum: str) -> dict[str, Any]:
        """A library spectrum by spectrum id, USI or accession (e.g. ``MSBNK-Eawag-EQ300801``): metadata and peaks."""
        return service.spectrum(spectrum)

    @app.get("/compounds/{inchikey}", response_model=CompoundsOut, dependencies=keyed, responses=_ERRORS,
             tags=["lake"])
    def compound(inchikey: str) -> dict[str, Any]:
        """A compound by full InChIKey, or every compound sharing a 14-letter first block; with its spectra."""
        return service.compound(inchikey)

    @app.get("/studies", response_model=list[StudyOut], dependencies=keyed, tags=["studies"])
    def studies() -> list[dict[str, Any]]:
        """Every annotated study: files, scans, scans annotated / without candidates / in errors."""
        return service.studies()

    @app.get("/studies/{name}/annotations", response_model=AnnotationsPage, dependencies=keyed, responses=_ERRORS,
             tags=["studies"])
    def annotations(name: str,
                    rank: int | None = Query(None, ge=1, description="only this rank (1: the best candidate)"),
                    min_confidence: float | None = Query(None, ge=0, le=1, allow_inf_nan=False,
                                                         description="confidence >= this (rank-1 rows carry it)"),
                    formula: str | None = Query(None, max_length=200, description="candidate formula, e.g. C8H10N4O2"),
                    limit: int = Query(50, ge=1, le=settings.max_page),
                    offset: int = Query(0, ge=0)) -> dict[str, Any]:
        """A page of a study's annotation rows (by file, scan, rank), filtered by rank, confidence and formula."""
        return service.annotations(name, rank=rank, min_confidence=min_confidence, formula=formula,
                                   limit=limit, offset=offset)

    @app.get("/studies/{name}/report", response_class=HTMLResponse, dependencies=keyed, responses=_ERRORS,
             tags=["studies"])
    def report(name: str) -> HTMLResponse:
        """The study's self-contained HTML report (as ``speclake report`` writes it)."""
        from speclake.serving.report import StudyNotFound, render_study_report

        try:
            return HTMLResponse(render_study_report(service.lake_dir, name))
        except StudyNotFound as exc:
            raise NotFound(str(exc)) from exc

    @app.post("/sql", response_model=SqlResponse, dependencies=keyed, responses=_ERRORS, tags=["sql"])
    def sql(req: SqlRequest) -> dict[str, Any]:
        """One read-only statement over the lake's tables and views, under a row limit, a result-size limit and
        a timeout (403: refused by the guard, 408: interrupted, 400: DuckDB could not run it)."""
        return service.sql.query(req.query, max_rows=req.max_rows).as_dict()

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The generated schema plus the JSON body of /annotate (read by hand there, so not seen by FastAPI)."""
        schema = base_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "AnnotateRequest", AnnotateRequest.model_json_schema(ref_template="#/components/schemas/{model}"))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


__all__ = ["ApiError", "PayloadTooLarge", "RequestContext", "create_app", "field_errors", "install_error_handlers", "is_loopback"]
