# imgsync - build, test and install.
#
#   make                 build imgsyncd, imgsyncctl and libimgsync
#   make demo            a guided tour: throwaway servers, a migration to S3
#   make check           install missing packages (Debian), build, run all tests
#   make check SANITIZE=1  the same with ASan + UBSan (no recovery)
#   make install         PREFIX=/usr/local DESTDIR=
#   make clean

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
DATADIR   ?= $(PREFIX)/share/imgsync
SYSCONFDIR ?= /etc
DESTDIR   ?=

PKGS      := libpq libcurl openssl libconfuse libsystemd expat
CC        ?= cc
ifeq ($(SANITIZE),1)
BUILD     ?= build-san
SANFLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT       := -O1
else
BUILD     ?= build
SANFLAGS  :=
OPT       := -O2
endif

# Recursive (=) so pkg-config runs only when compiling, after `make deps`.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wno-format-nonliteral -Wvla
CFLAGS    ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DIMGSYNC_VERSION='"$(VERSION)"' \
             -DIMGSYNC_DATADIR='"$(DATADIR)"' \
             $(WARN) $(CFLAGS) $(SANFLAGS) -Ilib $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)
LIBS       = $(PKG_LIBS) -lpthread

LIB_SRC   := $(sort $(wildcard lib/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/schema.o
SQL_SRC   := $(sort $(wildcard sql/[0-9]*.sql))
LIB_A     := $(BUILD)/libimgsync.a
DAEMON    := $(BUILD)/imgsyncd
CTL       := $(BUILD)/imgsyncctl
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC  := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN  := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tests/%)

.PHONY: all deps check demo tests clean install format
# keep test objects between runs
.SECONDARY:
all: $(DAEMON) $(CTL)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/gen/schema.c: $(SQL_SRC) sql/embed.sh
	@mkdir -p $(@D)
	sql/embed.sh $(SQL_SRC) > $@.tmp && mv $@.tmp $@

$(BUILD)/gen/schema.o: $(BUILD)/gen/schema.c
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIB_A): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

$(DAEMON): $(BUILD)/daemon/imgsyncd.o $(BUILD)/daemon/sync.o $(BUILD)/daemon/generation.o $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(CTL): $(BUILD)/daemon/imgsyncctl.o $(BUILD)/daemon/ctl_verify.o $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/tools/%.o $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

tests: all $(UNIT_BIN) $(TOOL_BIN)

# Installs what is missing on Debian (as root), or says what to install.
deps:
	@tests/harness/install-deps

check:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) tests/run

# A guided tour on throwaway servers (see README.md).
demo:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/harness/demo

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sql \
		$(DESTDIR)$(SYSCONFDIR)/imgsync
	install -m 0755 $(DAEMON) $(DESTDIR)$(SBINDIR)/imgsyncd
	for f in $(wildcard $(CTL)); do install -m 0755 $$f $(DESTDIR)$(BINDIR)/; done
	for f in $(wildcard sql/*.sql); do install -m 0644 $$f $(DESTDIR)$(DATADIR)/sql/; done
	install -m 0640 etc/imgsyncd.conf $(DESTDIR)$(SYSCONFDIR)/imgsync/imgsyncd.conf

format:
	clang-format -i lib/*.[ch] daemon/*.[ch] tests/unit/*.[ch] tests/tools/*.[ch]

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
