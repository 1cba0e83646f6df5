# dvsync: `make test` is the test command the README and CI use.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin/dvsync

.PHONY: build run test test-repeat lint bench tools

build:
	$(GO) build -o $(BIN) ./cmd/dvsync

# One process with everything: embedded NATS, the Dataverse emulator, worker, projector, HTTP.
run:
	$(GO) run ./cmd/dvsync dev

# Every test, with the race detector. Needs PostgreSQL on 127.0.0.1:5432 (DVSYNC_TEST_DATABASE_URL
# to use another); each package creates and drops its own database.
test:
	$(GO) test -race -count=1 ./...

# The concurrent tests, three times over, as before resolving an issue.
test-repeat:
	$(GO) test -race -count=3 ./cmd/... ./infra/postgres/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) mod tidy -diff

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
