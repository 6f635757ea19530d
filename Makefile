# Kuasar (Java) — build, install, test.
#   make                     build every module (Maven, JDK 25)
#   make install PREFIX=...  install launchers, helpers and systemd units (default PREFIX=/usr/local)
#   make release             dist/kuasar-<version>-linux-<arch>.tar.gz (+ .sha256): make install's tree for
#                            /usr/local with a jlink'd Java runtime, install.sh/uninstall.sh, SHA256SUMS; installs
#                            on a fresh Debian 12/13 with `sudo ./install.sh` (MVN=true: no Maven step; VERSION=...)
#   make test                unit and integration tests (what CI runs, with e2e)
#   make e2e                 end-to-end tests against real containerd 2.x, runc and CNI (root)
#   make bench               benchmark against containerd's stock runc shim (root)
#   make bench-vmm           microVM pods on kuasar-vmm against a bare-QEMU boot floor (root; docs/benchmark.md)
#   make bench-wasm          Wasm: engine runs/s, CRI containers against kuasar-runc and runc, daemon memory (root)
#   make bench-quark         gVisor pods on kuasar-quark against runsc behind the stock runc shim and runc (root)
#   make quickstart          run one pod on runc-sandboxer under a private containerd, show its output, clean up
#   make vmm-image           build the microVM guest kernel + initramfs into /var/lib/kuasar, and fetch trixie's
#                            virtiofsd into /var/lib/kuasar/virtiofsd (root; after make build;
#                            VMM_IMAGE_ARGS=--force rebuilds; docs/vmm-image.md)
#   make wasm-engines        fetch trixie's WasmEdge into /var/lib/kuasar/wasmedge for wasm-sandboxer's wasmedge
#                            engine (root; a private root, nothing installed; docs/wasm.md)
#   make runsc               fetch trixie's gVisor runsc into /var/lib/kuasar/runsc for quark-sandboxer's gvisor
#                            backend (root; a static binary, nothing installed; docs/quark.md)
PREFIX    ?= /usr/local
DESTDIR   ?=
JAVA_HOME ?= /usr/lib/jvm/temurin-25-jdk-amd64
MVN       ?= mvn
MVN_FLAGS ?= -B -q
export JAVA_HOME

BIN     := $(DESTDIR)$(PREFIX)/bin
LIBDIR  := $(DESTDIR)$(PREFIX)/lib/kuasar
LIBEXEC := $(DESTDIR)$(PREFIX)/libexec/kuasar
UNITDIR := $(DESTDIR)$(PREFIX)/lib/systemd/system
# The java the launchers run when their prefix has no bundled runtime (lib/kuasar/jre, which make release adds).
LAUNCHER_JAVA ?= $(JAVA_HOME)/bin/java
# $(call launcher,NAME,MAIN_CLASS,JVM_OPTS): writes the launcher $(BIN)/NAME from packaging/bin/launcher.in.
launcher = sed -e 's|@NAME@|$(1)|' -e 's|@JAVA@|$(LAUNCHER_JAVA)|' -e 's|@JVM_OPTS@|$(3)|' -e 's|@PREFIX@|$(PREFIX)|' \
	    -e 's|@MAIN@|$(2)|' packaging/bin/launcher.in > $(BIN)/$(1) && chmod 0755 $(BIN)/$(1)

# make release: <Maven version>-<git describe>, e.g. 0.1.0-SNAPSHOT-b87781d-dirty; the architecture as Debian names it.
ifeq ($(origin VERSION),undefined)
VERSION      := $(shell sed -n '/<parent>/,/<\/parent>/d; s|^  <version>\(.*\)</version>|\1|p' pom.xml | head -n1)-$(shell git describe --always --dirty 2>/dev/null || echo unknown)
endif
ifeq ($(origin RELEASE_ARCH),undefined)
RELEASE_ARCH := $(shell dpkg --print-architecture 2>/dev/null || uname -m)
endif
RELEASE_DIST ?= dist
# Daemon JVM options, measured with `make bench` (docs/benchmark.md): Serial GC, C1 only, a small heap capped at
# 48 MB that shrinks after a full GC, native heap trimming, Netty without pooled buffers or JFR. The heap cap is
# ~2.5x the live set at 100 pods; on OOM the JVM exits and systemd restarts it (pods keep running, are recovered).
JVM_OPTS := --enable-native-access=ALL-UNNAMED -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
            -Xss512k -Xms8m -Xmx48m -Xmn6m -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30 -XX:+ExitOnOutOfMemoryError \
            -XX:MaxMetaspaceSize=96m -XX:ReservedCodeCacheSize=32m -XX:+UseCompactObjectHeaders \
            -XX:TrimNativeHeapInterval=1000 -Dio.netty.allocator.type=unpooled -Dio.netty.jfr.enabled=false

# wasm-sandboxer runs the modules in its own heap (linear memory is heap buffers) and compiles them to classes:
# room for both. Each module is capped by its container's memory limit (by WasmRuntime's default without one).
WASM_JVM_OPTS := $(JVM_OPTS) -Xmx1g -XX:MaxMetaspaceSize=256m -XX:ReservedCodeCacheSize=96m
# kuasar-ctl: one command and out; C1 only, the serial GC, a small heap.
CTL_JVM_OPTS := --enable-native-access=ALL-UNNAMED -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xmx64m \
            -Dio.netty.allocator.type=unpooled -Dio.netty.jfr.enabled=false

.PHONY: all build install release test e2e bench bench-vmm bench-wasm bench-quark quickstart vmm-image wasm-engines runsc clean check-jdk

all: build

check-jdk:
	@./packaging/check-jdk.sh "$(JAVA_HOME)"

build: check-jdk
	$(MVN) $(MVN_FLAGS) -DskipTests install

install: build
	install -d $(BIN) $(LIBDIR)/runc-sandboxer $(LIBEXEC) $(UNITDIR)
	rm -f $(LIBDIR)/runc-sandboxer/*.jar
	install -m 0644 runc-sandboxer/target/lib/*.jar runc-sandboxer/target/runc-sandboxer-*[0-9T].jar $(LIBDIR)/runc-sandboxer/
	install -m 0755 runc-sandboxer/target/libexec/kuasar-holder runc-sandboxer/target/libexec/kuasar-monitor \
	    runc-sandboxer/target/libexec/kuasar-ttrpc-proxy runc-sandboxer/target/libexec/kuasar-fifo-keeper $(LIBEXEC)/
	$(call launcher,runc-sandboxer,io.kuasar.runc.RuncSandboxerMain,$(JVM_OPTS))
	install -m 0755 runc-sandboxer/target/libexec/containerd-shim-kuasar-runc-v1 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-vmm-v1 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-wasm-v1 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-quark-v1 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-runc-v2 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-vmm-v2 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-wasm-v2 \
	    runc-sandboxer/target/libexec/containerd-shim-kuasar-quark-v2 $(BIN)/
	sed -e 's|@PREFIX@|$(PREFIX)|' packaging/systemd/kuasar-runc.service > $(UNITDIR)/kuasar-runc.service
	install -d $(LIBDIR)/vmm-sandboxer $(DESTDIR)/var/lib/kuasar
	rm -f $(LIBDIR)/vmm-sandboxer/*.jar
	install -m 0644 vmm-sandboxer/target/lib/*.jar vmm-sandboxer/target/vmm-sandboxer-*[0-9T].jar $(LIBDIR)/vmm-sandboxer/
	$(call launcher,vmm-sandboxer,io.kuasar.vmm.VmmSandboxerMain,$(JVM_OPTS))
	sed -e 's|@PREFIX@|$(PREFIX)|' packaging/systemd/kuasar-vmm.service > $(UNITDIR)/kuasar-vmm.service
	install -d $(LIBDIR)/wasm-sandboxer
	rm -f $(LIBDIR)/wasm-sandboxer/*.jar
	install -m 0644 wasm-sandboxer/target/lib/*.jar wasm-sandboxer/target/wasm-sandboxer-*[0-9T].jar $(LIBDIR)/wasm-sandboxer/
	$(call launcher,wasm-sandboxer,io.kuasar.wasm.WasmSandboxerMain,$(WASM_JVM_OPTS))
	sed -e 's|@PREFIX@|$(PREFIX)|' packaging/systemd/kuasar-wasm.service > $(UNITDIR)/kuasar-wasm.service
	install -d $(LIBDIR)/quark-sandboxer
	rm -f $(LIBDIR)/quark-sandboxer/*.jar
	install -m 0644 quark-sandboxer/target/lib/*.jar quark-sandboxer/target/quark-sandboxer-*[0-9T].jar $(LIBDIR)/quark-sandboxer/
	install -m 0755 quark-sandboxer/target/libexec/kuasar-pause $(LIBEXEC)/
	$(call launcher,quark-sandboxer,io.kuasar.quark.QuarkSandboxerMain,$(JVM_OPTS))
	sed -e 's|@PREFIX@|$(PREFIX)|' packaging/systemd/kuasar-quark.service > $(UNITDIR)/kuasar-quark.service
	# kuasar-ctl (docs/kuasar-ctl.md): a short-lived tool, so a JVM that starts fast rather than one that stays small
	install -d $(LIBDIR)/kuasar-ctl
	rm -f $(LIBDIR)/kuasar-ctl/*.jar
	install -m 0644 kuasar-ctl/target/lib/*.jar kuasar-ctl/target/kuasar-ctl-*[0-9T].jar $(LIBDIR)/kuasar-ctl/
	$(call launcher,kuasar-ctl,io.kuasar.ctl.KuasarCtlMain,$(CTL_JVM_OPTS))
	# Kuasar's /etc/sysconfig/kuasar-<kind>: each unit's OPTIONS; an existing (edited) one is kept
	install -d $(DESTDIR)/etc/sysconfig
	for k in runc vmm wasm quark; do [ -e $(DESTDIR)/etc/sysconfig/kuasar-$$k ] || \
	    install -m 0644 packaging/systemd/kuasar-$$k.sysconfig $(DESTDIR)/etc/sysconfig/kuasar-$$k; done
	# Kuasar's default config path; an existing (edited) config is kept
	[ -e $(DESTDIR)/var/lib/kuasar/config.toml ] || \
	    install -m 0644 vmm-sandboxer/config_qemu_x86_64.toml $(DESTDIR)/var/lib/kuasar/config.toml
	# Kuasar's Cloud Hypervisor config beside it (needs hardware KVM; vmm-sandboxer --config selects it)
	install -m 0644 vmm-sandboxer/config_clh.toml $(DESTDIR)/var/lib/kuasar/config_clh.toml
	# Kuasar's StratoVirt config too (KVM only; its CONFIG_STRATOVIRT_PATH)
	install -m 0644 vmm-sandboxer/config_stratovirt_x86_64.toml $(DESTDIR)/var/lib/kuasar/config_stratovirt.toml

# The release tree is make install's, staged for PREFIX=/usr/local (target/release/kuasar-<version>/usr/local/...);
# packaging/release/release.sh adds the Java runtime, the scripts and checksums, and writes the tarball.
release: build
	rm -rf target/release
	$(MAKE) --no-print-directory install MVN=true DESTDIR=$(CURDIR)/target/release/kuasar-$(VERSION) PREFIX=/usr/local \
	    LAUNCHER_JAVA=/usr/local/lib/kuasar/jre/bin/java
	./packaging/release/release.sh "$(CURDIR)/target/release/kuasar-$(VERSION)" "$(VERSION)" "$(RELEASE_ARCH)" \
	    "$(RELEASE_DIST)"

test: check-jdk wasm-engines runsc
	$(MVN) -B install -Dsurefire.excludedGroups= -Dsurefire.groups=

e2e: build
	$(MVN) -B -pl tests verify -Dsurefire.excludedGroups= -Dsurefire.groups=e2e

bench: build
	./tests/benchmark/run.sh $(BENCH_ARGS)

bench-vmm: build
	./tests/benchmark/run.sh --vmm $(BENCH_ARGS)

bench-wasm: build
	./tests/benchmark/run.sh --wasm $(BENCH_ARGS)

bench-quark: build
	./tests/benchmark/run.sh --quark $(BENCH_ARGS)

quickstart:
	./examples/quickstart.sh

wasm-engines:
	./wasm-sandboxer/packaging/fetch-wasmedge.sh

runsc:
	./quark-sandboxer/packaging/fetch-runsc.sh

vmm-image:
	./vmm-task/image/build-image.sh $(VMM_IMAGE_ARGS)
	./vmm-task/image/fetch-virtiofsd.sh
	./vmm-task/image/fetch-vhost-device-vsock.sh

clean:
	$(MVN) $(MVN_FLAGS) clean
