# ddpm.c: build, test, data, deps, install.
#   make                    ./ddpm for this machine (-O3 -march=native, OpenMP)
#   make ARCH=x86-64-v3     for a given CPU level (any -march value); make PORTABLE=1: the compiler's default
#   make REF=1              ./ddpm whose model runs the plain reference layers (src/nn/ref/)
#   make MPI=1              ./ddpm for mpirun: data-parallel training and sampling (mpicc, Open MPI)
#   make test               every test; prints "N passed, N failed" (needs MNIST: make data, or MNIST_DIR)
#   make bench              ddpm.c against PyTorch on small.cfg and reference.cfg
#   make fuzz               libFuzzer on every parser for FUZZ_SECONDS (60) each (needs clang)
#   make data               MNIST into data/ (from $MNIST_DIR or downloaded), MD5-verified
#   make deps               install the Debian packages the build needs (as root), or print the command
#                           (with Open MPI: MPI=1; with PyTorch and NumPy for the interop checks: TORCH=1)
#   make install            PREFIX=/usr/local DESTDIR= : bin/ddpm, share/ddpm/ (configs, judge)
# CC, CPPFLAGS, CFLAGS (default -O3), LDFLAGS and LDLIBS are yours: the flags the build needs are
# added to them, never replaced by them.
CFLAGS  ?= -O3
PREFIX  ?= /usr/local
DATADIR ?= $(PREFIX)/share/ddpm
MNIST_DIR ?= data
export MNIST_DIR

ifeq ($(PORTABLE),1)
  ARCH :=
endif
ARCH ?= native
ARCH_FLAGS := $(if $(ARCH),-march=$(ARCH))
# MPI=1: compiled by the MPI wrapper (MPICC, default mpicc) unless CC is given
ifeq ($(MPI),1)
  MPICC ?= mpicc
  ifeq ($(origin CC),default)
    CC := $(MPICC)
  endif
endif
VARIANT := $(if $(ARCH),$(ARCH),portable)$(if $(filter 1,$(REF)),-ref)$(if $(filter 1,$(MPI)),-mpi)
BUILD   := build/$(VARIANT)

STB_CFLAGS := $(shell pkg-config --cflags stb 2>/dev/null)
STB_LIBS   := $(shell pkg-config --libs stb 2>/dev/null || echo -lstb)
OMP       := $(if $(filter 1,$(NO_OMP)),,-fopenmp)
WARN      := -Wall -Wextra
D_CPPFLAGS := -Isrc $(STB_CFLAGS) $(if $(filter 1,$(REF)),-DDDPM_REF) $(if $(filter 1,$(MPI)),-DDDPM_MPI) -DDDPM_DATADIR='"$(DATADIR)"'
D_CFLAGS   := -std=c11 -ffp-contract=fast -fno-trapping-math $(ARCH_FLAGS) $(OMP) $(WARN)
D_LDLIBS   := $(OMP) $(STB_LIBS) -lz -lm
COMPILE = $(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(D_CFLAGS) $(CFLAGS)
# One object per instruction set for the kernels in vector extensions (src/kernels/tiles_<isa>.c):
# compiled for that instruction set whatever the build's target (the AVX2 one without AVX-512 also in
# a -march=native build, with the build's tuning); isa.c runs only what the CPU supports. x86-64 only.
ifeq ($(shell uname -m),x86_64)
  ISA_FLAGS_tiles_avx512 := -mavx512f -mavx2 -mfma
  ISA_FLAGS_tiles_avx2   := -mno-avx512f -mavx2 -mfma
endif
isa_flags = $(ISA_FLAGS_$(basename $(notdir $(1))))
LINK    = $(CC) $(D_CFLAGS) $(CFLAGS) $(LDFLAGS)

SRC      := $(sort $(wildcard src/*/*.c src/*/*/*.c))
CLI_SRC  := $(filter src/cli/%,$(SRC))
LIB_SRC  := $(filter-out src/cli/%,$(SRC))
HEADERS  := $(wildcard src/*/*.h src/*/*/*.h)
LIB_OBJ  := $(patsubst src/%.c,$(BUILD)/%.o,$(LIB_SRC))
CLI_OBJ  := $(patsubst src/%.c,$(BUILD)/%.o,$(CLI_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/%,$(TEST_SRC))

# sanitizer build of the unit tests
MPI_SFX    := $(if $(filter 1,$(MPI)),-mpi)
ASAN_DIR   := build/asan$(if $(filter 1,$(REF)),-ref)$(MPI_SFX)
ASAN_FLAGS := -std=c11 -ffp-contract=fast -fno-trapping-math -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer $(OMP) $(WARN)
ASAN_OBJ   := $(patsubst src/%.c,$(ASAN_DIR)/%.o,$(LIB_SRC))
ASAN_TESTS := test_layers test_diffusion test_data test_checkpoint test_metrics
ASAN_BIN   := $(patsubst %,$(ASAN_DIR)/%,$(ASAN_TESTS))

.SECONDARY:
.PHONY: all test fuzz variant-tests ref-tests mpi-build check-mnist data deps clean bench demo install uninstall FORCE
all: ddpm

ddpm: $(CLI_OBJ) $(LIB_OBJ) build/.variant
	$(LINK) -o $@ $(CLI_OBJ) $(LIB_OBJ) $(LDLIBS) $(D_LDLIBS)

# the variant's own copy (make test builds build/<variant>-mpi/ddpm for the MPI test)
$(BUILD)/ddpm: $(CLI_OBJ) $(LIB_OBJ)
	$(LINK) -o $@ $(CLI_OBJ) $(LIB_OBJ) $(LDLIBS) $(D_LDLIBS)

# relink ./ddpm when switching variants; rebuild when the compile flags change
build/.variant: FORCE
	@mkdir -p build; echo "$(BUILD)" | cmp -s - $@ || echo "$(BUILD)" > $@
$(BUILD)/.flags: FORCE
	@mkdir -p $(BUILD); echo "$(COMPILE)" | cmp -s - $@ || echo "$(COMPILE)" > $@
$(ASAN_DIR)/.flags: FORCE
	@mkdir -p $(ASAN_DIR); echo "$(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(ASAN_FLAGS)" | cmp -s - $@ || echo "$(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(ASAN_FLAGS)" > $@
FORCE:

$(BUILD)/%.o: src/%.c $(HEADERS) $(BUILD)/.flags
	@mkdir -p $(dir $@)
	$(COMPILE) $(call isa_flags,$<) -c -o $@ $<

$(BUILD)/test_%: tests/test_%.c tests/testutil.h $(LIB_OBJ)
	$(LINK) $(D_CPPFLAGS) $(CPPFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS) $(D_LDLIBS)

$(ASAN_DIR)/%.o: src/%.c $(HEADERS) $(ASAN_DIR)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(ASAN_FLAGS) $(call isa_flags,$<) -c -o $@ $<

$(ASAN_DIR)/test_%: tests/test_%.c tests/testutil.h $(ASAN_OBJ)
	$(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(ASAN_FLAGS) -o $@ $< $(ASAN_OBJ) $(LDLIBS) $(D_LDLIBS)

MNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
check-mnist:
	@missing=""; for f in $(MNIST_FILES); do [ -f "$(MNIST_DIR)/$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then echo "make test: MNIST_DIR=$(MNIST_DIR) lacks$$missing: run 'make data' (or set MNIST_DIR to a folder with them)"; exit 1; fi

# The layer, GEMM and PyTorch-reference tests also run in the builds for the other CPU levels this
# CPU runs (x86-64-v3 = AVX2 + FMA; the portable build), whose vector code differs from native's,
# each with the GEMM variant of its level (DDPM_ISA).
VARIANT_TESTS := test_layers test_gemm test_reference test_torch_rng
VARIANT_ARCHS := $(if $(filter native,$(ARCH)),$(if $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo y),x86-64-v3) portable)
VARIANT_SKIP  := $(if $(filter native,$(ARCH)),$(if $(filter x86-64-v3,$(VARIANT_ARCHS)),,"echo SKIP x86-64-v3 build tests: this CPU lacks AVX2"))
# this build's own test_reference once more per narrower instruction set of the dispatched kernels
# (DDPM_ISA; the default run takes the widest); an instruction set this CPU lacks is named as skipped
HAS_AVX512    := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo y)
HAS_AVX2      := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo y)
ISA_RUN       := $(if $(HAS_AVX512),$(if $(HAS_AVX2),"DDPM_ISA=avx2 $(BUILD)/test_reference")) \
                 $(if $(HAS_AVX2),"DDPM_ISA=generic $(BUILD)/test_reference")
ISA_SKIP      := $(if $(HAS_AVX512),,"echo SKIP test_reference with the avx512 kernels: this CPU lacks AVX-512") \
                 $(if $(HAS_AVX2),,"echo SKIP test_reference with the avx2 kernels: this CPU lacks AVX2 + FMA")
VARIANT_ISA_x86-64-v3 := avx2
VARIANT_ISA_portable  := generic
VARIANT_RUN   := $(foreach a,$(VARIANT_ARCHS),$(patsubst %,"DDPM_ISA=$(VARIANT_ISA_$(a)) build/$(a)$(if $(filter 1,$(REF)),-ref)$(MPI_SFX)/%",$(VARIANT_TESTS)))
REF_SFX       := $(if $(filter 1,$(REF)),-ref)$(MPI_SFX)
variant-tests:
	@for a in $(VARIANT_ARCHS); do \
	  if [ $$a = portable ]; then opt="PORTABLE=1"; else opt="ARCH=$$a"; fi; \
	  $(MAKE) --no-print-directory $$opt $(if $(filter 1,$(REF)),REF=1) $$(for t in $(VARIANT_TESTS); do echo build/$$a$(REF_SFX)/$$t; done) >/dev/null || exit 1; \
	done

# Fuzzing: tests/fuzz/fuzz_<h>.c, one harness per parser. `make test` replays each seed corpus
# (tests/fuzz/corpus/<h>/) under the sanitizers with gcc; `make fuzz FUZZ_SECONDS=N` runs
# libFuzzer (Debian clang) on each for N seconds, new inputs kept in build/fuzz/corpus-<h>/.
FUZZ_HARNESSES := idx checkpoint config images args safetensors
FUZZ_REPLAY    := $(patsubst %,$(ASAN_DIR)/fuzz_%,$(FUZZ_HARNESSES))
FUZZ_SECONDS   ?= 60
FUZZ_CC        ?= clang
FUZZ_FLAGS     := -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(WARN)
ASAN_CLI_OBJ   := $(patsubst src/%.c,$(ASAN_DIR)/%.o,$(filter-out src/cli/main.c,$(CLI_SRC)))
$(ASAN_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c tests/fuzz/fuzz_util.h $(ASAN_OBJ) $(ASAN_CLI_OBJ)
	$(CC) $(D_CPPFLAGS) $(CPPFLAGS) $(ASAN_FLAGS) -o $@ $< tests/fuzz/replay.c $(ASAN_OBJ) $(ASAN_CLI_OBJ) $(LDLIBS) $(D_LDLIBS)
FUZZ_LIB := $(filter-out src/cli/main.c,$(SRC))
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h $(FUZZ_LIB) $(HEADERS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(D_CPPFLAGS) $(CPPFLAGS) $(FUZZ_FLAGS) -fopenmp -o $@ $< $(filter-out $(HEADERS),$(FUZZ_LIB)) \
	  $(shell pkg-config --libs stb 2>/dev/null) -lz -lm
fuzz: $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_HARNESSES))
	@for h in $(FUZZ_HARNESSES); do mkdir -p build/fuzz/corpus-$$h; \
	  echo "== fuzz_$$h: $(FUZZ_SECONDS) s"; \
	  build/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -rss_limit_mb=2048 -timeout=60 \
	    build/fuzz/corpus-$$h tests/fuzz/corpus/$$h 2>&1 | grep -E "DONE|stat::number_of_executed_units|ERROR|SUMMARY" || exit 1; \
	done

# the PyTorch reference test also with the model on the plain reference layers (REF=1)
REF_RUN := $(if $(filter 1,$(REF)),,build/$(if $(ARCH),$(ARCH),portable)-ref$(MPI_SFX)/test_reference)
ref-tests:
	@$(if $(REF_RUN),$(MAKE) --no-print-directory REF=1 $(REF_RUN) >/dev/null,true)

# the MPI test (tests/test_mpi.sh) runs an MPI build of this variant (compiled by MPICC, also when
# CC is given) when mpicc and mpirun exist (make deps MPI=1), and compares checkpoints with
# ckpt_diff; without MPI it prints a SKIP line
MPI_BUILD := build/$(if $(ARCH),$(ARCH),portable)$(if $(filter 1,$(REF)),-ref)-mpi
MPI_CC    := $(or $(MPICC),mpicc)
HAVE_MPI  := $(shell command -v $(MPI_CC) >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 && echo y)
mpi-build:
	@$(if $(HAVE_MPI),$(MAKE) --no-print-directory MPI=1 CC=$(MPI_CC) $(MPI_BUILD)/ddpm $(MPI_BUILD)/ckpt_diff >/dev/null,true)
$(BUILD)/ckpt_diff: tests/ckpt_diff.c $(LIB_OBJ)
	$(LINK) $(D_CPPFLAGS) $(CPPFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS) $(D_LDLIBS)

# every test binary, the CLI tests and the sanitizer builds; a failing test does not stop the others
test: check-mnist ddpm $(TEST_BIN) $(ASAN_BIN) $(FUZZ_REPLAY) variant-tests ref-tests mpi-build
	@BUILD_DIR=$(BUILD) bash tests/run_tests.sh "bash tests/test_layout.sh" "bash tests/test_build.sh" $(TEST_BIN) "bash tests/test_cli.sh ./ddpm" "bash tests/test_interop.sh ./ddpm" "bash tests/test_crash.sh ./ddpm 25" \
	  "bash tests/test_mpi.sh $(MPI_BUILD)/ddpm" \
	  $(addsuffix :asan,$(ASAN_BIN)) $(foreach h,$(FUZZ_HARNESSES),"$(ASAN_DIR)/fuzz_$(h) tests/fuzz/corpus/$(h)") \
	  "$(ASAN_DIR)/test_checkpoint --exhaustive tests/fuzz/corpus/checkpoint/micro.ckpt 97" \
	  $(if $(filter 1,$(NO_OMP)),,"OMP_PROC_BIND=true OMP_PLACES=cores $(BUILD)/test_threads") \
	  $(ISA_RUN) $(ISA_SKIP) $(VARIANT_RUN) $(VARIANT_SKIP) $(REF_RUN)

data:
	bash tools/get_mnist.sh data

deps:
	MPI=$(MPI) TORCH=$(TORCH) bash tools/deps.sh

install: ddpm
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(DATADIR)/models
	install -m 755 ddpm $(DESTDIR)$(PREFIX)/bin/ddpm
	install -m 644 models/*.cfg models/judge.bin $(DESTDIR)$(DATADIR)/models/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/ddpm
	rm -rf $(DESTDIR)$(DATADIR)

clean:
	rm -rf build ddpm

# ddpm.c vs PyTorch on small.cfg and reference.cfg (batch 64, 2 threads)
bench: ddpm
	bash tools/bench.sh

# the whole job: deps, build, data, train the default model, sample a grid into samples/
demo:
	bash tools/demo.sh
