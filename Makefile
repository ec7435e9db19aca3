# podmortem: `make demo` shows it working, `make test` checks it. Both set up a fresh Debian
# machine themselves (run as root: they install packages and start a private containerd).

CARGO ?= cargo
DEB_PACKAGES := containerd runc busybox-static protobuf-compiler clang e2fsprogs prometheus
# Parallel end-to-end tests each run their own containerd; two at a time suits a 2-core machine.
TEST_THREADS ?= 2

.PHONY: all deps build lint unit e2e test demo bench clean-testbeds

all: build

## deps: install the Debian packages the build and the tests need (only those missing)
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install a Rust toolchain (>= 1.89)"; exit 1; }
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

## build: the agent
build: deps
	$(CARGO) build --locked -p podmortem

## lint: formatting and clippy, warnings are errors
lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## unit: the agent's unit tests (fixtures only, no runtime needed)
unit: deps
	$(CARGO) test --locked -p podmortem

## e2e: end-to-end tests on a real containerd (root)
e2e: build
	$(CARGO) test --locked -p podmortem-e2e --no-run
	@# A build leaves gigabytes of dirty pages behind. containerd syncs its metadata on every
	@# exit, and while the kernel writes those pages back one CRI record can take seconds:
	@# the tests start on a quiet disk.
	sync
	$(CARGO) test --locked -p podmortem-e2e -- --test-threads=$(TEST_THREADS)

## test: everything CI runs
test: lint unit e2e

## demo: a private containerd, pods that fail for real, podmortem explaining them
demo: deps
	$(CARGO) build --locked -p podmortem -p podmortem-e2e --bins
	$(CARGO) run --locked -q -p podmortem-e2e --bin demo

## bench: kmsg parse throughput; one host dependency check's time and heap; the OTLP queue's heap per finding; exit- and OOM-kill-to-finding latency and footprint with 50 running containers (release build)
bench: deps
	$(CARGO) bench --locked -p podmortem --bench kmsg
	$(CARGO) bench --locked -p podmortem --bench host_check
	$(CARGO) bench --locked -p podmortem --bench otlp_queue
	$(CARGO) build --locked --release -p podmortem -p podmortem-e2e --bins
	PODMORTEM_BIN=target/release/podmortem ./target/release/bench

## clean-testbeds: kill and unmount what an interrupted test run left under /tmp
clean-testbeds:
	-pkill -9 -f '/tmp/podmortem-testbed-' || true
	-grep -o ' /tmp/podmortem-testbed-[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
	-rm -rf /tmp/podmortem-testbed-*
