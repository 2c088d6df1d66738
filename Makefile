# Two commands do all set-up on a fresh machine (Python 3.10+, Java 17):
#   make demo   ingest the bundled sample into ./speclake-lake and query it with SQL
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
	$(BIN)/speclake ingest --lake speclake-lake
	$(BIN)/speclake tables --lake speclake-lake
	$(BIN)/speclake sql "SELECT source, ionmode, ms_level, count(*) AS spectra FROM spectra GROUP BY ALL ORDER BY ALL" --lake speclake-lake

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf speclake-lake .pytest_cache
