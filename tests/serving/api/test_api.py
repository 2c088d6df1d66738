"""The HTTP API through a real uvicorn server on loopback: every route, every bad-input class, API key, request ids."""
from __future__ import annotations

import threading
import time

import pytest

from tests.serving.api.conftest import API_KEY, STUDY

PEAKS = [[91.0542, 12.0], [119.0491, 8.5], [138.0662, 100.0], [163.0866, 3.1]]


def sql(client, query: str) -> list[list]:
    reply = client.post("/sql", json_body={"query": query})
    assert reply.status == 200, reply.body
    return reply.json()["rows"]


@pytest.fixture(scope="module")
def library_spectrum(server):
    """A positive-mode library spectrum with a structure (id, accession, InChIKey-14, precursor m/z)."""
    from speclake.serving.api.client import ApiClient

    c = ApiClient(server.url, api_key=API_KEY)
    rows = sql(c, "SELECT spectrum_id, accession, inchikey, inchikey14, precursor_mz, num_peaks FROM spectra "
                  "WHERE inchikey14 IS NOT NULL AND ionmode = 'positive' AND ms_level = 2 AND num_peaks >= 5 "
                  "AND precursor_mz IS NOT NULL ORDER BY spectrum_id LIMIT 1")
    c.close()
    return dict(zip(["spectrum_id", "accession", "inchikey", "inchikey14", "precursor_mz", "num_peaks"], rows[0]))


# -- routes ------------------------------------------------------------------------------------------
def test_health_answers_without_the_key_and_reports_the_open_annotator(server):
    """/health needs no API key and says the annotator is open over the served lake."""
    from speclake.serving.api.client import ApiClient

    reply = ApiClient(server.url).get("/health")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "ok" and body["annotator_ready"] is True
    assert body["lake"].endswith("lake")


def test_every_other_route_needs_the_api_key(server):
    """Without X-API-Key (or with a wrong one) a route answers 401 with a JSON error, never the data."""
    from speclake.serving.api.client import ApiClient

    anon = ApiClient(server.url)
    wrong = ApiClient(server.url, api_key="not-the-key")
    for c in (anon, wrong):
        assert c.get("/studies").status == 401
        reply = c.post("/sql", json_body={"query": "SELECT 1"})
        assert reply.status == 401 and reply.json()["error"] == "unauthorized"
        assert c.post("/annotate", json_body={"precursor_mz": 195.0877, "ionmode": "positive",
                                              "peaks": PEAKS}).status == 401


def test_a_library_spectrum_is_found_by_id_and_by_accession(client, library_spectrum):
    """GET /spectra/{id}, /spectra/{accession} and /spectra/{USI} give the same spectrum, with all its peaks
    sorted by m/z."""
    by_id = client.get(f"/spectra/{library_spectrum['spectrum_id']}")
    assert by_id.status == 200
    body = by_id.json()
    assert body["spectrum_id"] == library_spectrum["spectrum_id"]
    assert len(body["peaks"]) == body["num_peaks"] == library_spectrum["num_peaks"]
    mz = [p[0] for p in body["peaks"]]
    assert mz == sorted(mz)
    if library_spectrum["accession"]:
        by_acc = client.get(f"/spectra/{library_spectrum['accession']}")
        assert by_acc.status == 200 and by_acc.json()["spectrum_id"] == library_spectrum["spectrum_id"]
    if body["usi"]:
        by_usi = client.get(f"/spectra/{body['usi']}")
        assert by_usi.status == 200 and by_usi.json()["spectrum_id"] == library_spectrum["spectrum_id"]


def test_a_compound_is_found_by_full_inchikey_and_by_first_block(client, library_spectrum):
    """GET /compounds/{key}: the full key gives that compound; the 14-letter block every variant, with spectra."""
    full = client.get(f"/compounds/{library_spectrum['inchikey']}").json()
    assert [c["inchikey"] for c in full["compounds"]] == [library_spectrum["inchikey"]]
    assert library_spectrum["spectrum_id"] in full["spectrum_ids"]
    block = client.get(f"/compounds/{library_spectrum['inchikey14'].lower()}").json()
    assert library_spectrum["inchikey"] in [c["inchikey"] for c in block["compounds"]]
    assert all(c["inchikey14"] == library_spectrum["inchikey14"] for c in block["compounds"])


def test_a_library_spectrum_posted_as_json_peaks_is_annotated_with_its_own_compound(client, library_spectrum):
    """A library spectrum's own peaks, posted as JSON (unsorted), come back with its structure at rank 1."""
    spec = client.get(f"/spectra/{library_spectrum['spectrum_id']}").json()
    body = {"precursor_mz": spec["precursor_mz"], "ionmode": "positive", "peaks": spec["peaks"][::-1], "top_k": 3}
    reply = client.post("/annotate", json_body=body)
    assert reply.status == 200, reply.body
    out = reply.json()
    assert len(out["scans"]) == 1 and out["errors"] == []
    cands = out["scans"][0]["candidates"]
    assert 1 <= len(cands) <= 3
    assert cands[0]["rank"] == 1 and cands[0]["inchikey14"] == library_spectrum["inchikey14"]
    sorted_reply = client.post("/annotate", json_body={**body, "peaks": spec["peaks"]}).json()
    assert sorted_reply["scans"][0]["candidates"] == cands  # unsorted peaks are sorted, not refused


def test_an_uploaded_study_file_is_annotated_as_speclake_annotate_did(client, api_lake):
    """POST /annotate with the MGF the study was annotated from gives the same rank-1 structure for every scan."""
    reply = client.upload("/annotate", "blind_study.mgf", api_lake[1].read_bytes(), top_k="1")
    assert reply.status == 200, reply.body
    api = {s["query_id"]: s["candidates"][0]["inchikey"] for s in reply.json()["scans"]}
    study = {qid: key for qid, key in sql(client, f"SELECT query_id, inchikey FROM annotations WHERE study = '{STUDY}' "
                                                  "AND (rank = 1 OR rank IS NULL)")}
    assert len(api) == len(study) == 40
    assert api == study


def test_studies_list_the_annotated_study_with_its_counts(client):
    """GET /studies gives the study's files and scans as annotation_files records them."""
    studies = {s["study"]: s for s in client.get("/studies").json()}
    files, scans = sql(client, f"SELECT count(*), sum(n_scans) FROM annotation_files WHERE study = '{STUDY}'")[0]
    assert studies[STUDY]["files"] == files == 1
    assert studies[STUDY]["scans"] == scans
    assert studies[STUDY]["annotated"] + studies[STUDY]["no_candidates"] + studies[STUDY]["errors"] == scans


def test_annotations_are_paged_and_filtered(client):
    """Pages do not overlap and add up to the total; rank and formula filters keep only matching rows."""
    first = client.get(f"/studies/{STUDY}/annotations?rank=1&limit=15").json()
    second = client.get(f"/studies/{STUDY}/annotations?rank=1&limit=15&offset=15").json()
    total = sql(client, f"SELECT count(*) FROM annotations WHERE study = '{STUDY}' AND rank = 1")[0][0]
    assert first["total"] == second["total"] == total >= 30
    keys = [(r["source_file"], r["query_id"]) for r in first["rows"] + second["rows"]]
    assert len(keys) == len(set(keys)) == 30
    assert all(r["rank"] == 1 for r in first["rows"])
    formula = first["rows"][0]["formula"]
    every_rank = client.get(f"/studies/{STUDY}/annotations").json()
    assert every_rank["total"] >= total
    only = client.get(f"/studies/{STUDY}/annotations?formula={formula}&limit=1000").json()
    assert only["rows"] and all(r["formula"] == formula for r in only["rows"])
    conf = client.get(f"/studies/{STUDY}/annotations?min_confidence=0.5").json()
    n_conf = sql(client, f"SELECT count(*) FROM annotations WHERE study = '{STUDY}' AND confidence >= 0.5")[0][0]
    assert conf["total"] == n_conf


def test_the_study_report_is_served_as_html(client):
    """GET /studies/{name}/report answers the self-contained HTML page of the study."""
    reply = client.get(f"/studies/{STUDY}/report")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert b"<html" in reply.body[:500].lower() and STUDY.encode() in reply.body


def test_sql_answers_read_only_queries(client):
    """POST /sql returns columns, types and rows of a SELECT over the lake's views."""
    reply = client.post("/sql", json_body={"query": "SELECT ionmode, count(*) AS n FROM spectra GROUP BY 1 ORDER BY 1"})
    body = reply.json()
    assert reply.status == 200 and body["columns"] == ["ionmode", "n"]
    assert sum(r[1] for r in body["rows"]) == sql(client, "SELECT count(*) FROM spectra")[0][0] > 0
    assert body["truncated"] is False


def test_the_openapi_schema_documents_every_route_with_examples(client):
    """/openapi.json lists every route; the annotate and SQL bodies carry examples."""
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/health", "/annotate", "/sql", "/spectra/{spectrum}", "/compounds/{inchikey}", "/studies",
            "/studies/{name}/annotations", "/studies/{name}/report"} <= paths
    body = schema["paths"]["/annotate"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert schema["components"]["schemas"][ref]["examples"][0]["ionmode"] == "positive"
    assert schema["components"]["schemas"]["SqlRequest"]["examples"][0]["query"].startswith("SELECT")
    assert client.get("/docs").status == 200


# -- bad input -----------------------------------------------------------------------------------------
def _annotate(**over):
    return {"precursor_mz": 195.0877, "ionmode": "positive", "peaks": PEAKS, **over}


BAD = [
    ("invalid JSON", "POST", "/annotate", {"body": b'{"precursor_mz": 195.08,', "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
    ("deeply nested JSON", "POST", "/annotate", {"body": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
    ("JSON that is not an object", "POST", "/annotate", {"json_body": [1, 2, 3]}, 422, "invalid_request"),
    ("infinite precursor", "POST", "/annotate", {"body": b'{"precursor_mz": Infinity, "ionmode": "positive", "peaks": [[138.06, 5.0]]}', "headers": {"Content-Type": "application/json"}}, 422, "invalid_request"),
    ("NaN peak", "POST", "/annotate", {"body": b'{"precursor_mz": 195.08, "ionmode": "positive", "peaks": [[138.06, NaN]]}', "headers": {"Content-Type": "application/json"}}, 422, "invalid_request"),
    ("negative intensity", "POST", "/annotate", {"json_body": _annotate(peaks=[[138.06, -5.0]])}, 422, "invalid_request"),
    ("negative m/z", "POST", "/annotate", {"json_body": _annotate(peaks=[[-138.06, 5.0]])}, 422, "invalid_request"),
    ("no peaks", "POST", "/annotate", {"json_body": _annotate(peaks=[])}, 422, "invalid_request"),
    ("unknown ion mode", "POST", "/annotate", {"json_body": _annotate(ionmode="sideways")}, 422, "invalid_request"),
    ("unknown field", "POST", "/annotate", {"json_body": _annotate(colour="blue")}, 422, "invalid_request"),
    ("peaks above the precursor only", "POST", "/annotate", {"json_body": _annotate(precursor_mz=50.0, peaks=[[300.0, 10.0]])}, 422, "not_annotatable"),
    ("form body", "POST", "/annotate", {"body": b"x=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
    ("unknown file format", "UPLOAD", "/annotate", {"filename": "notes.bin", "content": b"just some words\n"}, 415, "unsupported_format"),
    ("MGF without a scan", "UPLOAD", "/annotate", {"filename": "empty.mgf", "content": b"# nothing here\n"}, 422, "not_annotatable"),
    ("MGF whose every scan is bad", "UPLOAD", "/annotate", {"filename": "bad.mgf", "content": b"BEGIN IONS\nTITLE=no precursor\nCHARGE=1+\n80.0 10\nEND IONS\nBEGIN IONS\nTITLE=no peaks\nPEPMASS=200.1\nCHARGE=1+\nEND IONS\n"}, 422, "not_annotatable"),
    ("upload without a file field", "POST", "/annotate", {"body": b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 422, "invalid_request"),
    ("upload over the size limit", "UPLOAD", "/annotate", {"filename": "big.mgf", "content": b"0" * (600 * 1024)}, 413, "too_large"),
    ("chunked body over the size limit", "POST", "/annotate", {"body": b" " * (600 * 1024), "headers": {"Content-Type": "application/json"}, "chunked": True}, 413, "too_large"),
    ("unknown spectrum", "GET", "/spectra/no-such-spectrum", {}, 404, "not_found"),
    ("unknown study scan USI", "GET", "/spectra/mzspec:pest:blind_study:scan:1", {}, 404, "not_found"),
    ("unknown compound", "GET", "/compounds/AAAAAAAAAAAAAA-BBBBBBBBSA-N", {}, 404, "not_found"),
    ("malformed InChIKey", "GET", "/compounds/caffeine", {}, 422, "invalid_inchikey"),
    ("unknown study", "GET", "/studies/nope/annotations", {}, 404, "not_found"),
    ("unknown study report", "GET", "/studies/nope/report", {}, 404, "not_found"),
    ("confidence out of range", "GET", f"/studies/{STUDY}/annotations?min_confidence=2", {}, 422, "invalid_request"),
    ("page too large", "GET", f"/studies/{STUDY}/annotations?limit=100000", {}, 422, "invalid_request"),
    ("unknown route", "GET", "/nowhere", {}, 404, "not_found"),
    ("SQL not a string", "POST", "/sql", {"json_body": {"query": 42}}, 422, "invalid_request"),
    ("SQL invalid JSON", "POST", "/sql", {"body": b"{query: SELECT", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
]


@pytest.mark.parametrize("what,method,path,kw,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_with_a_clear_json_error_and_the_server_goes_on(client, what, method, path, kw, status,
                                                                            code):
    """Each bad-input class is answered with its status and error code, the request id in body and header; the
    next request is served."""
    if method == "UPLOAD":
        reply = client.upload(path, kw["filename"], kw["content"])
    else:
        reply = client.request(method, path, **kw)
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["error"] == code
    assert body["detail"]
    assert body["request_id"] == reply.headers["x-request-id"]
    assert client.get("/health").status == 200


def test_each_request_is_logged_with_its_id_and_status(client, caplog):
    """The server logs one line per request naming its request id, method, path and status."""
    import logging

    caplog.set_level(logging.INFO, logger="speclake.api")
    reply = client.get("/spectra/no-such-spectrum", headers={"X-Request-ID": "trace-me-42"})
    assert reply.status == 404
    deadline = time.monotonic() + 5  # the line is written once the response is sent: wait for it
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "speclake.api"]
        found = any("trace-me-42" in m and "/spectra/no-such-spectrum" in m and "404" in m for m in lines)
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert found, lines


def test_an_upload_with_more_scans_than_the_limit_is_refused(client):
    """A file of 101 scans (the server annotates at most 100 per request) gets a 413 naming both numbers."""
    records = "".join(f"BEGIN IONS\nTITLE=s{i}\nPEPMASS=200.1\nCHARGE=1+\n80.0 10\n120.0 100\nEND IONS\n"
                      for i in range(101))
    reply = client.upload("/annotate", "many.mgf", records.encode())
    assert reply.status == 413
    body = reply.json()
    assert body["error"] == "too_many_scans" and "101" in body["detail"] and "100" in body["detail"]
    assert client.get("/health").status == 200


def test_serve_refuses_a_public_address_without_an_api_key(api_lake):
    """`speclake serve --host 0.0.0.0` without --api-key stops with one clear line before starting anything."""
    from click.testing import CliRunner

    from speclake.cli import main

    out = CliRunner().invoke(main, ["serve", "--lake", str(api_lake[0]), "--host", "0.0.0.0", "--port", "1"])
    assert out.exit_code == 1
    assert "--api-key" in out.output and "Traceback" not in out.output


def test_a_client_request_id_is_echoed(client):
    """A sane X-Request-ID sent by the client comes back unchanged; a strange one is replaced."""
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "a b;c" * 30}).headers["x-request-id"]
    assert replaced != "a b;c" * 30 and len(replaced) == 16


# -- SQL guard over HTTP --------------------------------------------------------------------------------
REFUSED = [
    ("insert", "INSERT INTO compounds SELECT * FROM compounds", 403, "sql_statement_type"),
    ("create", "CREATE TABLE t AS SELECT 1", 403, "sql_statement_type"),
    ("copy to a file", "COPY spectra TO '/tmp/speclake-api-leak.csv'", 403, "sql_statement_type"),
    ("attach", "ATTACH '/tmp/speclake-api.db' AS other", 403, "sql_statement_type"),
    ("install", "INSTALL httpfs", 403, "sql_statement_type"),
    ("load", "LOAD httpfs", 403, "sql_statement_type"),
    ("set", "SET threads = 8", 403, "sql_statement_type"),
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')", 403, "sql_table_function"),
    ("file as a table", "SELECT * FROM '/etc/passwd'", 403, "sql_file_path"),
    ("two statements", "SELECT 1; DROP VIEW spectra", 403, "sql_multiple_statements"),
    ("timeout", "SELECT count(*) FROM range(200000000) a, range(100000) b WHERE a.range * b.range = 7", 408, "sql_timeout"),
    ("syntax error", "SELEC 1", 400, "sql_error"),
]


@pytest.mark.parametrize("what,query,status,code", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_sql_is_answered_and_the_server_still_answers(client, what, query, status, code):
    """Every refused SQL class gets its status and code; the next SQL request on the server works."""
    reply = client.post("/sql", json_body={"query": query})
    assert reply.status == status, reply.body
    assert reply.json()["error"] == code
    assert sql(client, "SELECT count(*) FROM compounds")[0][0] > 0


def test_a_cross_join_past_the_row_limit_is_truncated(client):
    """A result over the server's row limit (500 here) comes back cut at the limit, flagged truncated."""
    body = client.post("/sql", json_body={"query": "SELECT * FROM spectra a, spectra b"}).json()
    assert body["truncated"] is True and body["row_count"] == body["max_rows"] == 500
    body = client.post("/sql", json_body={"query": "SELECT a.spectrum_id FROM spectra a, spectra b",
                                          "max_rows": 7}).json()
    assert body["truncated"] is True and body["row_count"] == 7


def test_concurrent_requests_are_all_answered(server, library_spectrum):
    """Eight clients at once (annotate, lookups, SQL) all get 200s."""
    from speclake.serving.api.client import ApiClient

    statuses: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        c = ApiClient(server.url, api_key=API_KEY)
        replies = [c.post("/annotate", json_body=_annotate()),
                   c.get(f"/spectra/{library_spectrum['spectrum_id']}"),
                   c.post("/sql", json_body={"query": f"SELECT count(*) + {i} FROM spectra"})]
        c.close()
        with lock:
            statuses.extend(r.status for r in replies)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * 24
