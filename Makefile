# Gantry: build, run, test and benchmark.
# `make run` starts the embedded default stack; `make test` runs every test.

CARGO ?= cargo
ORT_VERSION ?= 1.31.1
ORT_DIR := .cache/onnxruntime-$(ORT_VERSION)
ORT_LIB := $(ORT_DIR)/libonnxruntime.so
export ORT_DYLIB_PATH ?= $(abspath $(ORT_LIB))

include models/model.mk

.PHONY: run test build release onnxruntime bench-proxy bench-cache clean-containers fmt lint

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# libonnxruntime.so from the pinned PyPI wheel (no other download source is used).
onnxruntime: $(ORT_LIB)
$(ORT_LIB):
	@mkdir -p $(ORT_DIR)/wheel
	python3 -m pip download --quiet --no-deps --only-binary=:all: \
	  --dest $(ORT_DIR)/wheel onnxruntime==$(ORT_VERSION)
	cd $(ORT_DIR) && python3 -c "import glob,zipfile;w=glob.glob('wheel/*.whl')[0];z=zipfile.ZipFile(w);n=[x for x in z.namelist() if '/capi/libonnxruntime.so' in x][0];open('libonnxruntime.so','wb').write(z.read(n))"
	@rm -rf $(ORT_DIR)/wheel
	@echo "ONNX Runtime library: $(ORT_LIB)"

run: release onnxruntime
	./target/release/gantry up

test: onnxruntime
	$(CARGO) test --all-targets -- --test-threads=2

bench-proxy: release
	bench/proxy.sh

# Cache hit ratios (Zipf, in process, real Redis) and L1-hit throughput vs nginx proxy_cache.
bench-cache: release
	bench/cache.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings

clean-containers:
	-docker ps -aq --filter label=gantry.managed=true | xargs -r docker rm -f
