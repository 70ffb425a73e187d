# Parley's entry points. `make dev` runs Parley; `make test` runs the whole test suite.
# Each installs what it needs first (scripts/install-deps.sh), so both work on a fresh Debian 12.

SWIFT ?= swift
ARGS ?=
FUZZ_SECONDS ?= 30
BENCH_SESSIONS ?= 1,50,100,200,400

.PHONY: dev test build fuzz bench bench-micro bench-transceiver bench-relay bench-sctp clean

## Run Parley in one process (relay + transceiver + demo page) with in-memory defaults.
dev:
	@scripts/install-deps.sh build
	$(SWIFT) run parley dev $(ARGS)

## Build, run every Swift test target, then the interop tests (real Chromium and aiortc calling
## `parley dev`, inside a loopback-only network namespace).
test:
	@scripts/install-deps.sh test
	$(SWIFT) build --build-tests
	$(SWIFT) test --disable-xctest  # every test uses Swift Testing; skip the empty XCTest pass
	scripts/interop.sh

build:
	@scripts/install-deps.sh build
	$(SWIFT) build

## Run each ParleyWire parser under libFuzzer for FUZZ_SECONDS seconds.
fuzz:
	@scripts/install-deps.sh test
	scripts/fuzz.sh $(FUZZ_SECONDS)

## Every benchmark: micro-benchmarks of the wire hot paths, the transceiver and the relay under load.
bench: bench-micro bench-transceiver bench-relay bench-sctp

## Micro-benchmarks (ordo-one/benchmark): time and allocations per operation on the hot paths.
bench-micro:
	@scripts/install-deps.sh build
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark --no-progress

## Server CPU, memory and setup time per session for 1…400 echo calls (release build, pinned cores).
bench-transceiver:
	@scripts/install-deps.sh build
	$(SWIFT) build -c release --product parley
	scripts/bench_transceiver.py --sessions $(BENCH_SESSIONS)

## Data-channel throughput, handshake cost and idle memory of ParleySCTP (in memory, one core).
bench-sctp:
	@scripts/install-deps.sh build
	$(SWIFT) build -c release --product parley
	.build/release/parley bench-sctp

## Relay forwarded packets/s, CPU and latency side by side with a C recvmmsg/sendmmsg forwarder.
bench-relay:
	@scripts/install-deps.sh build
	$(SWIFT) build -c release --product parley
	scripts/bench_relay.py

clean:
	rm -rf .build Benchmarks/.build Fuzz/bin
