#!/usr/bin/env bash
# Kuasar's Wasm example: one pod on wasm-sandboxer whose container is a WASI module (hello.wasm, built from
# tests/e2e/wasm/hello.wat into an offline OCI image), under a private containerd; see run_example_container.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/run_example_container.sh" kuasar-wasm "$@"
