# Parley's entry points. `make dev` runs Parley; `make test` runs the whole test suite.
# Each installs what it needs first (scripts/install-deps.sh), so both work on a fresh Debian 12.

SWIFT ?= swift
ARGS ?=
FUZZ_RUNS ?= 10000000
FUZZ_SMOKE_SECONDS ?= 5
BENCH_SESSIONS ?= 100,200,300,400
BENCH_CAPACITY ?= 600,800,1000,1200,1500
BENCH_REPEAT ?= 3
BENCH_SETUP_CALLS ?= 100

.PHONY: dev test build fuzz bench bench-micro bench-transceiver bench-setup bench-relay bench-sctp bench-agents clean

## Run Parley in one process (relay + transceiver + demo page) with in-memory defaults.
dev:
	@scripts/install-deps.sh build
	@echo "Building Parley (a first build takes a few minutes)…"
	@$(SWIFT) build --product parley -q 2>&1 | grep -v "^warning: \|^  *$$\|CMakeLists.txt" || true
	@.build/debug/parley dev $(ARGS)

## Build, check that no integer conversion can trap, run every Swift test target, then the interop
## tests (real Chromium, Firefox, aiortc calling `parley dev`, inside a loopback-only network namespace).
test:
	@scripts/install-deps.sh test
	$(SWIFT) build --build-tests
	scripts/check-conversions.py  # no integer conversion that can trap on a network value
	scripts/check-manifests.sh  # deploy/: every overlay rendered, linted and validated against Kubernetes' schemas
	$(SWIFT) test --disable-xctest  # every test uses Swift Testing; skip the empty XCTest pass
	scripts/fuzz.sh --seconds $(FUZZ_SMOKE_SECONDS)  # every harness briefly, so a crash cannot land
	scripts/release-build.sh  # the Containerfile's build, outside a container: the binary the Kubernetes test runs
	PARLEY_IMAGE_BIN=$$(scripts/release-build.sh --path) scripts/interop.sh

build:
	@scripts/install-deps.sh build
	$(SWIFT) build

## Every libFuzzer harness (parsers, and the session, client, SCTP association, jitter buffer behind
## their state) for FUZZ_RUNS inputs each; `scripts/fuzz.sh --help` for more.
fuzz:
	@scripts/install-deps.sh test
	scripts/fuzz.sh --runs $(FUZZ_RUNS)

## Every benchmark, side by side with its reference (a C forwarder, a Pion server, libsrtp), pinned
## cores; rewrites the tables, JSON and plots in docs/. Takes about 30 minutes.
bench: bench-micro bench-transceiver bench-setup bench-warp bench-relay bench-sctp bench-agents

## Micro-benchmarks (ordo-one/benchmark): time and allocations per operation on the hot paths.
bench-micro:
	@scripts/install-deps.sh bench
	.venv/bin/python scripts/bench_micro.py --output-dir docs

## Parley's transceiver against a Pion answerer: CPU and memory per call at 100/200/400 calls, the
## calls one core sustains, setup for one call and a burst of 100 (server core 0, `parley load` core 1).
bench-transceiver:
	@scripts/install-deps.sh bench
	$(SWIFT) build -c release --product parley
	.venv/bin/python scripts/bench_transceiver.py --sessions $(BENCH_SESSIONS) --capacity $(BENCH_CAPACITY) --repeat $(BENCH_REPEAT) --output-dir docs

## Setup with full-ICE clients: offer → ICE, DTLS, first echoed audio over BENCH_SETUP_CALLS sequential
## calls of the Pion client (Tests/Interop/pionclient) and an aiortc client, against Parley and the Pion
## reference server (server core 0, client core 1). aiortc comes with the test profile's PyPI packages.
bench-setup:
	@scripts/install-deps.sh bench
	@.venv/bin/python -c "import aiortc" 2>/dev/null || scripts/install-deps.sh test
	$(SWIFT) build -c release --product parley
	.venv/bin/python scripts/bench_setup.py --calls $(BENCH_SETUP_CALLS) --output-dir docs

## WARP's setup (SNAP, SPED, a negotiated oai-events) against the plain one across a 50 ms round
## trip built by Tests/Tools/impair.py (root: namespaces, TUN): `parley load` with and without
## --warp, then headless Chromium with and without its field trials (the test venv's Selenium).
bench-warp:
	@scripts/install-deps.sh test
	$(SWIFT) build -c release --product parley
	python3 scripts/bench_warp.py --output-dir docs  # runs scripts/chromium_setup_probe.py with .venv's Python

## Data-channel throughput, handshake cost and idle memory of ParleySCTP (in memory, one core).
bench-sctp:
	@scripts/install-deps.sh build
	$(SWIFT) build -c release --product parley
	.build/release/parley bench-sctp | tee .build/bench-sctp.md
	python3 scripts/benchlib.py bench-sctp docs/benchmarks.md < .build/bench-sctp.md  # the standard library only

## The agent path: pulse latency through echo, loopback in process and over the WebSocket protocol;
## server CPU per call with Opus decode + encode on.
bench-agents:
	@scripts/install-deps.sh bench
	$(SWIFT) build -c release --product parley
	.venv/bin/python scripts/bench_agents.py --output-dir docs

## Relay forwarded packets/s, CPU and latency side by side with a C recvmmsg/sendmmsg forwarder.
bench-relay:
	@scripts/install-deps.sh bench
	$(SWIFT) build -c release --product parley
	.venv/bin/python scripts/bench_relay.py --output-dir docs

clean:
	rm -rf .build .build-fuzz Benchmarks/.build Fuzz/bin Fuzz/logs
