# baton: one Makefile, out-of-tree build/. Sources are discovered by folder, so a new module is
# a new file, not a Makefile edit. See README.md for the targets.
BUILD ?= build
CC    ?= cc
OPT   ?= -O2 -g
WERROR ?= -Werror
PKGS   = libzmq libprotobuf-c liburing libmicrohttpd libcjson libxxhash libpcre2-8
WARN   = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
         -Wcast-qual -Wvla -Wdouble-promotion -Wformat=2 -Wundef -Wwrite-strings \
         -Wimplicit-fallthrough -Werror=implicit-function-declaration \
         -Werror=incompatible-pointer-types $(WERROR)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -fno-omit-frame-pointer -MMD -MP -I. -I$(BUILD) \
          $(PKG_CFLAGS)
LDLIBS += $(PKG_LIBS) -lpthread -lm

# ISA-specific kernels: each file gets its own -m flags; ops_init() picks one at run time.
AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c

PROTO_SRCS := $(wildcard proto/*.proto)
PROTO_GEN  := $(PROTO_SRCS:proto/%.proto=$(BUILD)/proto/%.pb-c.c) \
              $(PROTO_SRCS:proto/%.proto=$(BUILD)/proto/%.pb-c.h)
LIB_SRCS   := $(wildcard common/*.c engine/*.c ops/*.c proto/*.c)
LIB_OBJS   := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(PROTO_GEN:.c=.o)
CLI_SRCS   := $(wildcard client/*.c)
# CLI modules other than main.c go into libclient.a, linked into tests (test_client).
CLIENT_LIB_OBJS := $(filter-out $(BUILD)/client/main.o,$(CLI_SRCS:%.c=$(BUILD)/%.o))
COORD_SRCS := $(wildcard coordinator/*.c)
# Coordinator modules other than main.c also go into libcoord.a, which tests link (a suite
# for sched or http needs them without the daemon's main).
COORD_LIB_SRCS := $(filter-out coordinator/main.c,$(COORD_SRCS))
COORD_LIB_OBJS := $(COORD_LIB_SRCS:%.c=$(BUILD)/%.o)
WORKER_SRCS:= $(wildcard worker/*.c)
# Worker modules other than main.c go into libworker.a, linked into tests (test_worker).
WORKER_LIB_OBJS := $(filter-out $(BUILD)/worker/main.o,$(WORKER_SRCS:%.c=$(BUILD)/%.o))
TEST_SRCS  := $(wildcard tests/test_*.c)
TEST_BINS  := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_SRCS := $(wildcard tests/bench/bench_*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BUILD)/bench/%)
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)

BINS := $(BUILD)/baton
ifneq ($(wildcard coordinator/main.c),)
BINS += $(BUILD)/baton-coordinator
endif
ifneq ($(WORKER_SRCS),)
BINS += $(BUILD)/baton-worker
endif

# mpirun mode (docs/mpi.md): MPI is compiled into build/baton-mpi and its self-test only, so
# the other binaries and libbaton.a need no MPI library. Built when ompi-c is installed.
MPI_SRCS   := $(wildcard mpi/*.c)
MPI_LIB_OBJS := $(filter-out $(BUILD)/mpi/main.o,$(MPI_SRCS:%.c=$(BUILD)/%.o))
MPI_CFLAGS := $(patsubst -I%,-isystem %,$(shell pkg-config --cflags ompi-c 2>/dev/null))
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
MPI_TEST_BINS :=
ifneq ($(MPI_LIBS),)
ifneq ($(wildcard mpi/main.c),)
BINS += $(BUILD)/baton-mpi
endif
ifneq ($(wildcard tests/mpi/mpi_selftest.c),)
MPI_TEST_BINS := $(BUILD)/mpi/mpi_selftest
endif
endif

.SECONDARY:
.PHONY: all test asan tsan bench fuzz demo deps lint format clean tests benches deploy \
        deploy-rolling deploy-check test-deploy test-cross
all: $(BINS)

$(BUILD)/libbaton.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.c | $(PROTO_GEN)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.pb-c.o: $(BUILD)/%.pb-c.c
	$(CC) $(filter-out $(WARN),$(CFLAGS)) -w -c $< -o $@

# One protoc-c run writes both files: the header is a target too, so objects that include it
# (listed in their .d files) are rebuilt after a .proto change, also in a parallel build.
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	protoc-c --c_out=$(BUILD) $<

$(BUILD)/ops/%_avx2.o:   CFLAGS += $(AVX2_FLAGS)
$(BUILD)/ops/%_avx512.o: CFLAGS += $(AVX512_FLAGS)

$(BUILD)/baton: $(BUILD)/client/main.o $(BUILD)/libclient.a $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/baton-coordinator: $(COORD_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/baton-worker: $(WORKER_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/mpi/%.o $(BUILD)/tests/mpi/%.o: CFLAGS += $(MPI_CFLAGS)
$(BUILD)/baton-mpi: $(MPI_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/libcoord.a $(BUILD)/libworker.a \
                    $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS)
$(BUILD)/mpi/mpi_selftest: $(BUILD)/tests/mpi/mpi_selftest.o $(MPI_LIB_OBJS) $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) $(MPI_LIBS)

$(BUILD)/libcoord.a: $(COORD_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libclient.a: $(CLIENT_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libworker.a: $(WORKER_LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libclient.a $(BUILD)/libworker.a $(BUILD)/libcoord.a \
                  $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcriterion
$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/libbaton.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

# test_ops links the kernel checks it shares with the cross test below (tests/ops_checks.c: not
# a test_*.c, so not a suite of its own); objects before the library that resolves them.
$(BUILD)/tests/test_ops: $(BUILD)/tests/test_ops.o $(BUILD)/tests/ops_checks.o $(BUILD)/libbaton.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcriterion

tests: $(BINS) $(TEST_BINS) $(MPI_TEST_BINS)
benches: $(BINS) $(BENCH_BINS)

# The test command of the README: every Criterion suite, then tests/e2e/*.sh; the last line
# printed is the runner's summary (tests/run.sh).
test: tests
	@BUILD=$(BUILD) bash tests/run.sh

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all" test

tsan:
	$(MAKE) BUILD=build-tsan OPT="-O1 -g -fsanitize=thread" test

bench: benches
	@BUILD=$(BUILD) bash tests/bench/run.sh

# libFuzzer targets, built with clang; each runs FUZZ_SECS seconds (default 60).
# The libraries are compiled into $(FUZZ_BUILD) by the ordinary object rules (so the generated
# proto header and the per-ISA flags work), instrumented with fuzzer-no-link, and each target
# links only the archive members it uses. The object build keeps going past a file that does
# not compile (-k) so one broken module does not block fuzzing an unrelated parser; the link
# fails if the target needs that module.
FUZZ_SECS ?= 60
FUZZ_BUILD = build-fuzz
FUZZ_OPT   = -g -O1 -fsanitize=fuzzer-no-link,address,undefined
fuzz:
	@BUILD=$(FUZZ_BUILD) FUZZ_SECS=$(FUZZ_SECS) bash tests/fuzz/run.sh

$(FUZZ_BUILD)/fuzz/%: tests/fuzz/%.c FORCE
	@$(MAKE) --no-print-directory -k BUILD=$(FUZZ_BUILD) CC=clang OPT="$(FUZZ_OPT)" WERROR= \
	    $(LIB_OBJS:$(BUILD)/%=$(FUZZ_BUILD)/%) $(COORD_LIB_OBJS:$(BUILD)/%=$(FUZZ_BUILD)/%) \
	    || echo "fuzz: some library objects did not compile with clang; linking what exists" >&2
	@mkdir -p $(@D)
	@rm -f $(@D)/lib$*.a
	@$(AR) rcs $(@D)/lib$*.a $$(ls $(LIB_OBJS:$(BUILD)/%=$(FUZZ_BUILD)/%) \
	    $(COORD_LIB_OBJS:$(BUILD)/%=$(FUZZ_BUILD)/%) 2>/dev/null)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. -I$(FUZZ_BUILD) \
	    $(PKG_CFLAGS) $< $(@D)/lib$*.a -o $@ $(LDLIBS)

.PHONY: FORCE
FORCE:

demo: all
	@bash tests/e2e/demo.sh

# Ansible deployment (docs/deploy.md). INVENTORY is an ini like ansible/inventory.example.ini;
# the "copy" install mode takes the binaries of $(BUILD), built here first. DEPLOY_ARGS is
# passed to ansible-playbook (e.g. DEPLOY_ARGS="--limit old-laptop --check --diff").
INVENTORY ?= ansible/inventory.ini
ANSIBLE_RUN = ANSIBLE_CONFIG=ansible/ansible.cfg ansible-playbook -i $(INVENTORY) \
              -e baton_local_build_dir=$(abspath $(BUILD)) $(DEPLOY_ARGS)
deploy: all
	$(ANSIBLE_RUN) ansible/site.yml
deploy-rolling: all
	$(ANSIBLE_RUN) ansible/rolling.yml
deploy-check:
	cd ansible && ANSIBLE_CONFIG=ansible.cfg ansible-playbook -i inventory.example.ini \
	    --syntax-check site.yml rolling.yml
	cd ansible && ansible-lint -p site.yml rolling.yml
# The deployment end to end on three network-namespace hosts (root; several minutes, so not in
# `make test`, which runs the static checks as tests/e2e/test_ansible.sh).
test-deploy: all
	BUILD=$(BUILD) bash tests/e2e/slow_ansible.sh

# The AArch64 kernels (ops/ops_neon.c) cross-compiled and run under qemu-user: the ops modules
# only (the engine needs arm64 builds of liburing, pcre2, ...), with the plain-C driver
# tests/cross/test_ops_cross.c. Once on a CPU with dot products (qemu -cpu max: "neon-dotprod"
# is chosen) and once without (cortex-a53: "neon"). tests/run.sh runs it when the tools exist.
CROSS_CC    ?= aarch64-linux-gnu-gcc
CROSS_QEMU  ?= qemu-aarch64 -L /usr/aarch64-linux-gnu
CROSS_SRCS   = common/err.c common/log.c engine/dtype.c ops/ops.c ops/ops_ref.c ops/quant.c \
               ops/repack.c ops/ops_neon.c ops/threadpool.c ops/fpmode.c tests/ops_checks.c tests/cross/test_ops_cross.c
$(BUILD)/cross/test_ops_cross: $(CROSS_SRCS) $(wildcard common/*.h engine/dtype.h ops/*.h) \
                               tests/ops_checks.h
	@mkdir -p $(@D)
	$(CROSS_CC) -std=c11 -D_GNU_SOURCE -O2 -march=armv8-a $(WARN) -I. $(CROSS_SRCS) -o $@ \
	    -lpthread -lm
test-cross: $(BUILD)/cross/test_ops_cross
	$(CROSS_QEMU) -cpu max $< --expect neon-dotprod
	$(CROSS_QEMU) -cpu cortex-a53 $< --expect neon

deps:
	bash .ci/deps.sh

lint:
	@clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h') && \
		echo "lint: $(words $(shell git ls-files '*.c' '*.h')) files as .clang-format says"

format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

clean:
	rm -rf build build-*

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
