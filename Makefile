# dvsync: `make test` is the test command the README and CI use.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin/dvsync

.PHONY: build run deps test-env test test-repeat lint bench bench-quick bench-go fuzz faults faults-short check-deploy check-alerts

CONFORMANCE := infra/emulator/conformance

build:
	$(GO) build -o $(BIN) ./cmd/dvsync

# One process with everything: embedded NATS, the Dataverse emulator, worker, projector, HTTP.
run:
	$(GO) run ./cmd/dvsync dev

# The emulator's conformance suite drives it with dynamics-web-api, a published Dataverse client
# (Node.js 18 or newer); npm ci installs the version package-lock.json pins.
deps: test-env
	npm ci --prefix $(CONFORMANCE) --no-audit --no-fund --loglevel=error

# What the tests need: PostgreSQL, Node.js, Chromium, started or installed (.ci/test-env says what
# is missing when it cannot install it).
test-env:
	@.ci/test-env

# Every test, with the race detector. Each package creates and drops its own PostgreSQL database
# (on 127.0.0.1:5432, or DVSYNC_TEST_DATABASE_URL).
test: test-env deps
	$(GO) test -race -count=1 -timeout 30m ./...

# The concurrent tests, three times over, as before resolving an issue.
test-repeat: test-env deps
	$(GO) test -race -count=3 -timeout 45m ./cmd/... ./infra/postgres/... ./infra/sqlite/... ./consumers/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) mod tidy -diff

# The benchmark (README "Benchmark"): dvsync as separate processes on nats-server, a private
# PostgreSQL cluster and the emulator, beside two baselines measured in the same run; one table.
# BENCH_FLAGS passes more flags, e.g. BENCH_FLAGS='-scenario raw,drain -repeat 5'.
BENCH_FLAGS ?=
bench:
	$(GO) run ./cmd/dvsync-bench -profile full $(BENCH_FLAGS)

bench-quick:
	$(GO) run ./cmd/dvsync-bench -profile quick $(BENCH_FLAGS)

# The packages' Go benchmarks.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Each fuzz target briefly; a crash fails the run and leaves its input under testdata/fuzz/.
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report its own
# deadline as a failure ("context deadline exceeded", no crasher; go.dev/issue/75804).
FUZZTIME ?= 20000x
# Each input of the prefilter's target runs every message rule's whole expression (what the split
# must answer as): 20,000 of them took four minutes of CI, a quarter says as much.
PREFILTER_FUZZTIME ?= 5000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME) ./domain
	$(GO) test -run '^$$' -fuzz '^FuzzMessagePrefilter$$' -fuzztime $(PREFILTER_FUZZTIME) ./domain
	$(GO) test -run '^$$' -fuzz '^FuzzParseErrorBody$$' -fuzztime $(FUZZTIME) ./infra/dataverse
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./infra/events

# The fault suite (README "Fault suite"): dvsync as separate processes on nats-server and a private
# PostgreSQL cluster it creates (Debian's pg_createcluster), one fault per scenario.
# FAULTS_FLAGS passes more flags, e.g. FAULTS_FLAGS='-scenario late-writes -keep'.
FAULTS_FLAGS ?=
faults:
	$(GO) run ./cmd/dvsync-faults -profile full $(FAULTS_FLAGS)

faults-short:
	$(GO) run ./cmd/dvsync-faults -profile short $(FAULTS_FLAGS)

# The deployment files, offline (README "Running it in production"): docker-compose.yml, the
# Kubernetes manifests against the schemas in deployments/kubernetes/schemas, the NATS Helm values.
check-deploy:
	bash deployments/check

# The Prometheus alerting rules and their unit tests (deployments/prometheus). promtool comes with
# Debian's prometheus package (about 20 s to install), installed here when missing.
PROMTOOL ?= promtool
check-alerts:
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		{ apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
		  { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }; }; } || \
		{ echo "check-alerts: promtool is missing; install it (Debian: apt-get install prometheus; or https://prometheus.io/download/)"; exit 1; }
	$(PROMTOOL) check rules deployments/prometheus/alerts.yml
	$(PROMTOOL) test rules deployments/prometheus/alerts_test.yml
