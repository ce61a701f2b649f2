# ddpm.c — build, test, data, deps.
#   make              build ./ddpm (-O3 -march=native, OpenMP)
#   make PORTABLE=1   build without -march=native (any x86-64 / other CPU)
#   make test         unit tests, gradient checks, PyTorch reference, CLI tests (+ ASan/UBSan unit tests)
#   make data         put MNIST in data/ (from $MNIST_DIR or downloaded), MD5-verified
#   make deps         install the Debian packages the build needs (as root), or print the command
CC      ?= gcc
STB_CFLAGS := $(shell pkg-config --cflags stb 2>/dev/null)
STB_LIBS   := $(shell pkg-config --libs stb 2>/dev/null || echo -lstb)
WARN    = -Wall -Wextra
ifeq ($(PORTABLE),1)
  ARCH  =
  BUILD = build/portable
else
  ARCH  = -march=native
  BUILD = build/native
endif
ifeq ($(NO_OMP),1)
  OMP   =
else
  OMP   = -fopenmp
endif
CFLAGS  ?= -O3
CFLAGS  += -std=c11 -ffp-contract=fast -fno-trapping-math $(ARCH) $(OMP) $(WARN) -Iinclude $(STB_CFLAGS)
LDLIBS  = $(OMP) $(STB_LIBS) -lz -lm

LIB_SRC  = $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  = $(patsubst src/%.c,$(BUILD)/%.o,$(LIB_SRC))
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRC))
HEADERS  = $(wildcard include/*.h)

# sanitizer build of the unit tests
ASAN_DIR   = build/asan
ASAN_FLAGS = -std=c11 -ffp-contract=fast -fno-trapping-math -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer $(OMP) $(WARN) -Iinclude $(STB_CFLAGS)
ASAN_OBJ   = $(patsubst src/%.c,$(ASAN_DIR)/%.o,$(LIB_SRC))
ASAN_TESTS = test_layers test_diffusion test_data test_checkpoint test_metrics
ASAN_BIN   = $(patsubst %,$(ASAN_DIR)/%,$(filter $(ASAN_TESTS),$(patsubst tests/%.c,%,$(TEST_SRC))))

MNIST_DIR ?= $(abspath ../shared/data/mnist)
export MNIST_DIR

.SECONDARY:
.PHONY: all test test-unit test-asan data deps clean bench demo FORCE
all: ddpm

ddpm: $(BUILD)/main.o $(LIB_OBJ) build/.variant
	$(CC) $(CFLAGS) -o $@ $(BUILD)/main.o $(LIB_OBJ) $(LDLIBS)

# relink ./ddpm when switching between the native and PORTABLE=1 builds
build/.variant: FORCE
	@mkdir -p build; echo "$(BUILD)" | cmp -s - $@ || echo "$(BUILD)" > $@
FORCE:

$(BUILD)/%.o: src/%.c $(HEADERS) Makefile | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/test_%: tests/test_%.c tests/testutil.h $(LIB_OBJ)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

$(BUILD) $(ASAN_DIR):
	mkdir -p $@

$(ASAN_DIR)/%.o: src/%.c $(HEADERS) Makefile | $(ASAN_DIR)
	$(CC) $(ASAN_FLAGS) -c -o $@ $<

$(ASAN_DIR)/test_%: tests/test_%.c tests/testutil.h $(ASAN_OBJ)
	$(CC) $(ASAN_FLAGS) -o $@ $< $(ASAN_OBJ) $(LDLIBS)

test: ddpm $(TEST_BIN)
	@set -e; for t in $(TEST_BIN); do echo "== $$t"; $$t; done
	@echo "== tests/test_cli.sh"; BUILD_DIR=$(BUILD) bash tests/test_cli.sh ./ddpm
	@$(MAKE) --no-print-directory test-asan
	@echo "ALL TESTS PASSED"

test-asan: $(ASAN_BIN)
	@set -e; for t in $(ASAN_BIN); do echo "== $$t (asan+ubsan)"; OMP_NUM_THREADS=2 $$t; done

data:
	bash tools/get_mnist.sh data

deps:
	bash tools/deps.sh

clean:
	rm -rf build ddpm

# ddpm.c vs PyTorch on small.cfg and reference.cfg (batch 64, 2 threads)
bench: ddpm
	bash tools/bench.sh

# the whole job: deps, build, data, train the default model, sample a grid into samples/
demo:
	bash tools/demo.sh
