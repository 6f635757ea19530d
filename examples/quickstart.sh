#!/usr/bin/env bash
# Quickstart (`make quickstart`): one pod on the default runc sandboxer; see run_example_container.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/run_example_container.sh" kuasar-runc "$@"
