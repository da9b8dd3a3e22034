# imgsync - build, test and install.
#
#   make                 build imgsyncd, imgsyncctl and libimgsync
#   make demo            a guided tour: throwaway servers, a migration to S3
#   make check           install missing packages (Debian), build, run all tests
#   make check SANITIZE=1  the same with ASan + UBSan (no recovery)
#   make check VALGRIND=1  the same with imgsyncd and imgsyncctl under valgrind
#   make check TESTS="migrate faults"  only the tests whose names contain those
#   make install         PREFIX=/usr/local DESTDIR= (binaries, SQL, man pages,
#                        systemd units, sysusers/tmpfiles, sample config)
#   make deb             the Debian package, built in $(BUILD)/deb/
#   make man             check the man pages (groff, no warnings)
#   make bench           imgsync against rclone, aws and s3cmd on throwaway servers;
#                        results into bench/README.md (WORKLOADS="1 5": only some)
#   make fuzz            libFuzzer (clang) on the parsers, FUZZ_SECONDS each (default 60)
#   make torture         the long forms of the fault and crash tests (tests/README.md)
#   make clean

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
DATADIR   ?= $(PREFIX)/share/imgsync
MANDIR    ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
# systemd looks in /usr/local/lib/... too; Debian 12 wants /lib/systemd/system
UNITDIR   ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
EXAMPLESDIR ?= $(DATADIR)/examples
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
# WERROR= for builds with other compilers or flags (the Debian package)
WERROR    ?= -Werror
WARN      := -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wno-format-nonliteral -Wvla
CFLAGS    ?= $(OPT) -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -DIMGSYNC_VERSION='"$(VERSION)"' \
             -DIMGSYNC_DATADIR='"$(DATADIR)"' \
             $(WARN) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) -Ilib $(PKG_CFLAGS) -MMD -MP
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

.PHONY: all deps check demo tests clean install format deb man bench bench-build fuzz torture
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

# The benchmarks (bench/README.md): the tools bench/run needs, then the run,
# which starts its own servers and writes its results into bench/README.md.
BENCH_BIN := $(BUILD)/bench/s3ceiling $(BUILD)/bench/latency
WORKLOADS ?=

$(BUILD)/bench/s3ceiling: $(BUILD)/bench/s3ceiling.o $(LIB_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/bench/latency: $(BUILD)/bench/latency.o
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

bench-build: all $(BENCH_BIN)

bench:
	@tests/harness/install-deps
	@bench/install-deps
	@$(MAKE) --no-print-directory bench-build
	@BUILD=$(BUILD) bench/run $(WORKLOADS)

# Installs what is missing on Debian (as root), or says what to install.
deps:
	@tests/harness/install-deps

check:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) $(if $(filter 1,$(VALGRIND)),IMGSYNC_VALGRIND=1 IMGSYNC_TEST_TIMEOUT=1800) $(if $(filter 1,$(SANITIZE)),IMGSYNC_SANITIZE=1) tests/run $(TESTS)

# libFuzzer harnesses (tests/fuzz/), built with clang in $(BUILD)/fuzz.
FUZZ_SECONDS ?= 60
# The admin command parser is SQL: its harness runs against a throwaway
# PostgreSQL, through the end-to-end test that starts one.
fuzz:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/fuzz/run $(FUZZ_SECONDS)
	@BUILD=$(BUILD) IMGSYNC_FUZZ_SECONDS=$(FUZZ_SECONDS) tests/run fuzz-command

# The fault and crash tests at full length: more kills, more faults, more images.
torture:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) IMGSYNC_TORTURE=1 IMGSYNC_TEST_TIMEOUT=3600 tests/run torture faults

# A guided tour on throwaway servers (see README.md).
demo:
	@tests/harness/install-deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) tests/harness/demo

MAN_PAGES := man/imgsyncctl.1 man/imgsyncd.conf.5 man/imgsyncd.8
UNITS     := etc/imgsyncd.service etc/imgsyncd@.service
# the units name /usr/sbin and /etc/imgsync: follow SBINDIR and SYSCONFDIR
UNIT_SED  := -e 's|/usr/sbin/imgsyncd|$(SBINDIR)/imgsyncd|g' \
             -e 's|/etc/imgsync/|$(SYSCONFDIR)/imgsync/|g'

# The configuration in $(SYSCONFDIR) is installed only where there is none:
# an operator's file is never overwritten.  It is 0640: the daemon's group
# (imgsync, from sysusers.d) must be able to read it, see README.md.
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/sql \
		$(DESTDIR)$(EXAMPLESDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/imgsync
	install -m 0755 $(DAEMON) $(DESTDIR)$(SBINDIR)/imgsyncd
	install -m 0755 $(CTL) $(DESTDIR)$(BINDIR)/imgsyncctl
	install -m 0644 $(wildcard sql/*.sql) $(DESTDIR)$(DATADIR)/sql/
	install -m 0644 man/imgsyncctl.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/imgsyncd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/imgsyncd.8 $(DESTDIR)$(MANDIR)/man8/
	for u in $(UNITS); do \
		sed $(UNIT_SED) $$u > $(DESTDIR)$(UNITDIR)/$${u#etc/}.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${u#etc/}.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$${u#etc/}.tmp $(DESTDIR)$(UNITDIR)/$${u#etc/} || exit 1; \
	done
	install -m 0644 etc/sysusers.d/imgsync.conf $(DESTDIR)$(SYSUSERSDIR)/imgsync.conf
	install -m 0644 etc/tmpfiles.d/imgsync.conf $(DESTDIR)$(TMPFILESDIR)/imgsync.conf
	install -m 0644 etc/imgsyncd.conf $(DESTDIR)$(EXAMPLESDIR)/imgsyncd.conf
	test -e $(DESTDIR)$(SYSCONFDIR)/imgsync/imgsyncd.conf || \
		install -m 0640 etc/imgsyncd.conf $(DESTDIR)$(SYSCONFDIR)/imgsync/imgsyncd.conf

# Every man page renders without a groff warning.
man:
	@for m in $(MAN_PAGES); do \
		out=$$(LC_ALL=C.UTF-8 groff -man -ww -z $$m 2>&1); \
		if [ -n "$$out" ]; then echo "$$m:"; echo "$$out"; exit 1; fi; \
	done; echo "man pages: no warnings"

# The Debian package (packaging/debian), built from a copy of the tree in
# $(BUILD)/deb/, where dpkg-buildpackage leaves the .deb and its friends.
DEB_DIR   := $(BUILD)/deb
DEB_SRC   := $(DEB_DIR)/imgsync-$(VERSION)
DEB_FILES := Makefile README.md .clang-format daemon lib sql etc man tests
deb:
	@v=$$(dpkg-parsechangelog -l packaging/debian/changelog -S Version); \
	if [ "$$v" != "$(VERSION)" ]; then \
		echo "packaging/debian/changelog is at $$v, the Makefile at $(VERSION)" >&2; exit 1; fi
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_SRC)
	tar -cf - $(DEB_FILES) | tar -xf - -C $(DEB_SRC)
	cp -R packaging/debian $(DEB_SRC)/debian
	rm -rf $(DEB_SRC)/debian/.debhelper
	cd $(DEB_SRC) && dpkg-buildpackage -us -uc -b
	@ls $(DEB_DIR)/*.deb

format:
	clang-format -i lib/*.[ch] daemon/*.[ch] tests/unit/*.[ch] tests/tools/*.[ch]

clean:
	rm -rf build build-san

# (not the package build's copy of the tree in $(BUILD)/deb)
-include $(shell find $(BUILD) -path $(BUILD)/deb -prune -o -type f -name '*.d' -print 2>/dev/null)
