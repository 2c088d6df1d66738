# Two commands do all set-up on a fresh machine (Python 3.10+, Java 17):
#   make demo   the full flow on the bundled sample into ./speclake-lake (ingest, features, a small
#               training run, structure index, annotation of the bundled study, report) and SQL over it
#   make test   run the test suite (real Spark, DuckDB, Ray, FAISS on small data)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test bench clean chromium

install: $(STAMP)

# Debian's chromium for the study report's browser test (tests/serving/report): installed when missing
# and we are root with apt; never fatal (without it that test skips and says why).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "chromium not installed: the report's browser test will skip"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/speclake flow run full --config infra/local.yaml
	$(BIN)/speclake sql "SELECT regexp_extract(source_file, '[^/]+$$') AS file, outcome, count(*) AS scans FROM annotation_outcomes WHERE study = 'demo' GROUP BY ALL ORDER BY ALL" --lake speclake-lake
	$(BIN)/speclake sql "SELECT record_locator AS scan, round(precursor_mz, 4) AS precursor_mz, compound_name, inchikey, round(confidence, 2) AS confidence FROM annotations_top1 WHERE study = 'demo' AND inchikey IS NOT NULL ORDER BY confidence DESC, scan LIMIT 5" --lake speclake-lake
	@echo "report: $(CURDIR)/speclake-lake/reports/demo.html"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf speclake-lake .pytest_cache
